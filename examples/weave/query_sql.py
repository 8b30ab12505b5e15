# Queries on a SQL dataset compile into one statement with bound parameters.
imgs = SQLDataset('catalog.db', None, 'images', path='data/images/{name}')
print([f.name for f in Query(imgs, imgs.colour == 'blue')])                   # direct form
print([f.name for f in Query(imgs, imgs.c.name % 'cat%', limit=2)])           # LIKE, limit
print([f.name for f in Query(imgs, Or(imgs.c.colour | ('red', 'green'),
                                      And(imgs.c.width >= 640, imgs.c.owner != None)))])  # noqa: E711
print([f.name for f in Query(imgs, imgs.c.owner == "O'Brien")])               # bound value
print([f.name for f in Query(imgs, Not(imgs.c.colour == 'blue'))])           # NOT
bare = Query(imgs, imgs.c.thumb == None)                                      # noqa: E711
Map('head -c 64 {IN} > {OUT}', bare, '{basename_woext}.thumb')
