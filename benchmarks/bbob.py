"""BBOB benchmark of ev3evo.minimize against pycma, evosax and nevergrad (see ev3evo/bench/bbob.py).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bbob.py --quick --json benchmarks/results/bbob_quick.json \
        --out benchmarks/results
    ev3evo bench bbob --quick   # the same from the command line
    OPENBLAS_NUM_THREADS=1 python benchmarks/bbob.py --quick --solvers ev3evo,pycma-ipop  # 2 solvers
"""

import argparse
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from ev3evo.bench import bbob

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bbob.add_arguments(parser)
    sys.exit(bbob.main(parser.parse_args()))
