# Output name templates (docs/weaver.md, "Output names").
src = Glob('data/text/t0[12].txt')
cp = ParseFunction('cp {IN} {OUT}')
copies = Map(cp, src, '{basename}.copy')     # t01.txt.copy t02.txt.copy
Map(cp, src, '{BASE_WOEXT}.b')               # t01.b t02.b
Map(cp, src, 'out/{i}-{basename_woext}')     # out/00000-t01 out/00001-t02
Map(cp, copies, '{fullpath_woext}.again')    # t01.txt.again t02.txt.again
Map(cp, src, '{stash}')                      # two _Stash/0/0/0/NNNNNNN paths
