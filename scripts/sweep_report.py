"""Rebuild the sweep report (summary.csv, summary.md, summary.png) of a multirun directory:

.venv/bin/python scripts/sweep_report.py outputs/multiruns/<experiment>/<time>_<token>
"""

import sys
from pathlib import Path

from deepbasics.reports.sweep import write_report

if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: sweep_report.py <multirun directory>")
    report = write_report(sys.argv[1])
    print(f"{report['jobs']} jobs, {report['failed']} not completed; wrote summary.csv, summary.md, summary.png")
