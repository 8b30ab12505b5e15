# MapReduce with real reducers: `treadle weave wordcount.py shell` uses the executable form.
def mapper(path, line):
    for word in line.split():
        print(f'{word.lower()}\t1')


def reducer(word, counts):
    print(f'{word}\t{sum(int(c) for c in counts)}')


if CurrentScript().arguments[:1] == ['shell']:
    mapper = ShellFunction('cat "$@" | tr -cs "[:alnum:]" "\\n" | awk \'NF {print tolower($0) "\\t1"}\'')
    reducer = ShellFunction('awk -F "\\t" \'{c[$1] += $2} END {for (w in c) print w "\\t" c[w]}\' "$@"')
MapReduce(mapper, reducer, Glob('data/text/*.txt'), 'wordcount.txt', group=3, reducers=3)
