# Wavefront: the edit distance of two words, natively and expanded.
A, B = 'kitten', 'sitting'
edge = {(x, 0): x for x in range(len(A) + 1)} | {(0, y): y for y in range(len(B) + 1)}


def cell(x, y, left, bottom, diag):
    same = A[x - 1] == B[y - 1]
    return min(int(left) + 1, int(bottom) + 1, int(diag) + (0 if same else 1))


F = PythonFunction(cell, helpers={'A': A, 'B': B})
Wavefront(F, edge, len(A), len(B), outputs='distance.txt')
Wavefront(F, edge, len(A), len(B), outputs='distance-expanded.txt', native=False)
