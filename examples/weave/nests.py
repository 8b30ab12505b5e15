# Named nests: each is a directory with its own DAG, one rule in its parent.
T = Glob('data/text/*.txt')
with Nest('lines'):
    counts = Map('wc -l {IN} > {OUT}', T, '{basename}.n')
    with Nest('sorted'):
        Map('sort {IN} > {OUT}', T, '{basename}.s')
merged = Merge(counts, 'lines.txt')
with Nest('words', barrier=merged):
    Map('wc -w {IN} > {OUT}', T, '{basename}.w')
