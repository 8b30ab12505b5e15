# Options blocks: None inherits, anything else overrides; -b options win over all.
with Options(cpu=2, memory='1G', disk='20G'):
    print(CurrentOptions())
    with Options(cpu=4):
        print(CurrentOptions())
        Map('gzip -c {IN} > {OUT}', Glob('data/text/*.txt'), '{basename}.gz')
        with Options(memory=None):
            print(CurrentOptions())
    with Options(local=True, batch='--partition=short'):
        print(CurrentOptions())
        ParseFunction('hostname > {OUT}')(outputs='where.txt')
