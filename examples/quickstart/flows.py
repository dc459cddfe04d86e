"""The quickstart: two tasks in parallel, then one that combines their outputs.

Run it with `python -m scriptflow_trio flows.py sleepit`, then once more: the second
run skips all three tasks. `touch test_1.txt` and only `final` runs again.
"""

import scriptflow_trio as sf


async def flow_sleepit():
    """Solve two problems in parallel, then combine the answers."""
    t1 = sf.Task(
        cmd="python -c \"import time; time.sleep(1); open('test_1.txt','w').write('5')\"",
        outputs="test_1.txt",
        name="solve-1",
    )
    t2 = sf.Task(
        cmd="python -c \"import time; time.sleep(1); open('test_2.txt','w').write('5')\"",
        outputs="test_2.txt",
        name="solve-2",
    )
    await sf.bag(t1, t2)  # in parallel

    final = sf.Task(
        cmd="python combine.py",
        name="final",
        inputs=[*t1.get_outputs(), *t2.get_outputs()],
        outputs="final.txt",
    )
    await final


async def flow_sweep(n: int = 4, scale: float = 1.0):
    """A parameter sweep: n simulations, then a summary (try n=8 scale=2.5)."""
    sims = [
        sf.Task(
            cmd=["python", "-c", f"open('sim/{i}.txt', 'w').write(str({i} * {scale}))"],
            outputs=f"sim/{i}.txt",
            name=f"sim-{i}",
        )
        for i in range(n)
    ]
    await sf.bag(*sims)
    summary = sf.Task(
        cmd=["python", "-c",
             "import glob; print(sum(float(open(f).read()) for f in glob.glob('sim/*.txt')))"],
        inputs=sf.glob("sim/*.txt"),
        name="summary",
        quiet=False,
    )
    await summary
