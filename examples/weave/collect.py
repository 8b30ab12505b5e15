# Garbage collection: the upper-cased intermediates go once their counts are made.
T = Glob('data/text/*.txt')
up = Map('tr a-z A-Z < {IN} > {OUT}', T, '{stash}')
Map('wc -c < {IN} > {OUT}', up, '{i}.n', collect=True)
