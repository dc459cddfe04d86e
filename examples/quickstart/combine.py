"""Add the two answers of the quickstart's solve tasks into final.txt."""

with open("test_1.txt") as f:
    a = int(f.read())
with open("test_2.txt") as f:
    b = int(f.read())
with open("final.txt", "w") as f:
    f.write(f"{a + b}\n")
