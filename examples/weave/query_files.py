# Queries on file datasets test File attributes at compile time.
ds = Glob('data/text/*.txt')
print(sorted(f.name for f in Query(ds, ds.c.size >= 200)))
some = Query(ds, Or(ds.c.name % 't0[1-3]*', ds.name | ('t07.txt', 't08.txt')), limit=4)
print([f.name for f in some])
Map('wc -l {IN} > {OUT}', some, '{basename}.lines')
