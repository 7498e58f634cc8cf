"""The outcome of a run as an exit status, for scripts that chain `nemotron sdg run` with training.

    0  every unit finished and every stage kept at least one record
    2  the run could not start or stopped on an error (bad config, output disk full or read-only ...)
    3  some units gave up (their calls kept failing); their records are missing. Rerunning the same
       command retries exactly those units.
    4  every unit finished, but a stage kept no record (so the stages after it had nothing to work on)
"""
from __future__ import annotations

EXIT_OK, EXIT_ERROR, EXIT_GAVE_UP, EXIT_EMPTY = 0, 2, 3, 4


def run_status(summary: dict) -> dict:
    """{"exit": code, "message": one line, "gave_up": {stage: units}, "empty": [stages]} of a summary."""
    stages = summary["stages"]
    gave_up = {name: s["units_failed"] for name, s in stages.items() if s["units_failed"]}
    empty = [name for name, s in stages.items() if s["records_kept"] == 0]
    if gave_up:
        units = sum(gave_up.values())
        where = ", ".join(f"{name} {n}" for name, n in gave_up.items())
        code, message = EXIT_GAVE_UP, (f"{units} unit(s) gave up after their retries ({where}); their records are "
                                       f"missing; rerun the same command to retry them")
    elif empty:
        code, message = EXIT_EMPTY, f"stage(s) {', '.join(empty)} kept no records"
    else:
        code, message = EXIT_OK, "complete"
    return {"exit": code, "message": message, "gave_up": gave_up, "empty": empty}
