"""Derive data/profiles/boston311.json from the City of Boston's 2015 311 requests.

    .venv/bin/python scripts/derive_boston311_profile.py PATH/boston311_2015.csv.gz

The raw file (121,145 rows, 2.5 MB) stays outside the repository; the profile (a few kB) is
what gridgov ships and reads (``gridgov simulate --profile boston311``). Times in the file are
Boston local time, so the hours of the week are local hours there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from gridgov.analysis.demand_profile import derive_profile, profile_path

SOURCE = (
    "City of Boston 311 service requests, 2015 (121,145 requests; open data, ODC PDDL 1.0); "
    "timing only, the geography stays the district's"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="boston311_2015.csv.gz")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    requests = pd.read_csv(args.csv, dtype=str)
    profile = derive_profile(requests, name="boston311", source=SOURCE)
    out = args.out or profile_path("boston311")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(profile, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    f = profile["figures"]
    print(
        f"wrote {out}: {profile['requests']} requests over {profile['weeks']} weeks; "
        f"closed {f['closed_share']:.1%}, on time {f['on_time_share']:.1%} of "
        f"{f['with_target']:.0f} with a target; median resolution {f['p50_h']:.1f} h, "
        f"p90 {f['p90_h']:.1f} h; busiest/quietest hour of the week {f['peak_to_trough']:.1f}x"
    )


if __name__ == "__main__":
    main()
