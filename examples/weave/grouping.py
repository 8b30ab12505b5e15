# Inline grouping: group=4 puts 4 tasks in each sub-DAG; -t N sets the default.
T = Glob('data/text/*.txt')
Map('md5sum {IN} > {OUT}', T, '{basename}.md5', group=4)
Map('sha1sum {IN} > {OUT}', T, '{basename}.sha1')
