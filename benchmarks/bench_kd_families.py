"""The KD-families study (recipes/kd_families/study.py) with the machine line and date, for RESULTS.md.

    nice python benchmarks/bench_kd_families.py --tables 1 2 3 4 --jobs 2
"""

import datetime
import os
import sys
import time

from machine import machine_line

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "kd_families"))
from study import main

if __name__ == "__main__":
    start = time.time()
    main(sys.argv[1:])
    print(f"{machine_line()}; {datetime.date.today()}; {(time.time() - start) / 60:.1f} min wall")
