# Every kind of function (docs/weaver.md, "Functions"), and Define/Export.
year = ShellFunction('date -u +%Y > "$1"', cmd_format='{EXE} {OUT}')
year(outputs='year.txt')                                   # four digits
count = ShellFunction('n=0\nfor f in "$@"; do n=$((n + $(wc -l < "$f"))); done\necho "$n"',
                      shell='bash')
count(Glob('data/text/*.txt'), 'lines.txt')               # total line count


def add(*numbers):
    return sum(int(x) for x in numbers)


PythonFunction(add)(outputs='sum.txt', arguments=[1, 2, 3, 4])   # "10"
words = Pipeline(['cat {IN}', 'tr -s " " "\\n"', 'sort -u > {OUT}'], separator='|')
words('data/text/t01.txt', 'words.txt')                    # unique words of t01
Define('GREETING', 'hello', export=True)
Export('HOME')                                             # taken from the engine's environment
env = ParseFunction('env > {OUT}', environment={'COLOUR': 'blue'})
env(outputs='env0.txt')                                    # GREETING=hello, COLOUR=blue, HOME=...
env(outputs='env1.txt', environment={'SIZE': 'L'})         # ... and SIZE=L
