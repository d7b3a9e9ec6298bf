"""Screenshot an HTML report in headless Chromium:
python scripts/screenshot_report.py report.html docs/report.png"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imhibench.aggregate.screenshot import main

main()
