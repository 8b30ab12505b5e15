# One task per text file: its size in bytes.
Map('wc -c {IN} > {OUT}', Glob('data/text/*.txt'), '{basename_woext}.size')
