"""The evidence runs of docs/results.md: every experiment at `--preset medium`, seed by seed.

    python -m trainers.evidence --root /work/runs/evidence            # run or continue everything
    python -m trainers.evidence --root R --list                       # commands, state, time left
    python -m trainers.evidence --root R --only 'defense-*/seed0'     # some stages only
    python -m trainers.evidence --root R --report docs/results        # tables of what has finished

Each stage is one trainer command (`python -m trainers.<name> ... --preset medium
--resume-if-present`), run in its own process with its log in `<root>/logs/`. Stages run seed-major
(seed 0 of every experiment before seed 1), so an interrupted campaign has the most complete
picture; running the command again continues where it stopped, down to the last epoch (finished
methods are kept by `--resume-if-present`). `<root>/campaign.json` keeps each stage's state and
wall-clock time. With `--archive runs/evidence` the small files of every finished stage are kept in
the repository as well, and a campaign on a new machine starts from them
(`great_tf.evidence_archive`). The tables are `great_tf.evidence` (docs/design.md#evidence).

One campaign process runs on a root at a time (a second is refused in one line); a killed
campaign takes its trainer with it. The command exits 0 when every selected stage is done, and
otherwise ends in one line naming the stages that failed (`--rerun-failed` runs them again) or
are not done yet (a re-attack waits for the training stage that saves its model).
"""

import os
import shlex
import signal
import sys

from trainers import flags


def main(argv=None):
    from great_tf import evidence

    parser = flags.OneLineParser(prog="python -m trainers.evidence",
                                 description="The medium-preset evidence runs of docs/results.md.")
    parser.add_argument("--root", default=os.path.join("runs", "evidence"),
                        help="where every run, log and campaign.json go (default runs/evidence)")
    parser.add_argument("--seeds", type=flags.positive_int, default=evidence.SEEDS,
                        help=f"seeds 0..N-1 of every experiment (default {evidence.SEEDS})")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="stages whose name matches this shell pattern (repeatable), e.g. "
                        "'defense-mnist/*' or '*/seed0'")
    parser.add_argument("--list", action="store_true",
                        help="print the stages, their state and an estimate of the time left; run nothing")
    parser.add_argument("--rerun-failed", action="store_true",
                        help="run stages that failed before again (default: skip them)")
    parser.add_argument("--archive", metavar="DIR",
                        help="keep the small files of finished stages (results, sweep tables, curves, "
                        "campaign.json) in DIR too, and take from DIR those the root lacks first, so "
                        "a campaign continues on a new machine without rerunning them (e.g. the "
                        "repository's runs/evidence)")
    parser.add_argument("--report", metavar="STEM",
                        help="write the tables of every finished run to STEM.md (and .json); run nothing")
    parser.add_argument("--campaign", choices=evidence.CAMPAIGNS, default="subset",
                        help="subset: the medium-preset runs on the 5,000-image CIFAR-10 subset "
                        "(default); full: the large-preset runs on the complete CIFAR-10 of --data-dir")
    parser.add_argument("--data-dir", type=flags.existing_dir,
                        help="with --campaign full: the TFDS folder of the complete CIFAR-10")
    args = parser.parse_args(argv)
    if args.campaign == "full" and args.report:
        parser.error("--report is written from the subset campaign only so far")
    all_stages = evidence.stages(args.root, args.seeds, args.campaign, args.data_dir)
    stages = evidence.select_stages(all_stages, args.only)
    if not (args.list or args.report):  # they only read the campaign's state
        evidence.lock_root(args.root)  # before the restore writes into it
    keep = archiver(args.archive, args.root)
    if args.report:
        text = evidence.write_report(args.root, args.seeds, args.report)
        keep()  # with the figures the report keeps of lost curves
        return text
    if args.list:
        return evidence.print_stages(args.root, stages)
    stop_cleanly_on_signals()
    try:
        evidence.run_stages(args.root, stages, rerun_failed=args.rerun_failed, all_stages=all_stages,
                            after_each=keep)
    finally:
        keep()
    check_all_done(args.root, stages)
    return stages


def archiver(dest, root):
    """With an archive folder `dest`: restores from it what `root` lacks, and returns the function
    that archives root's finished stages into it; without one, a function that does nothing (the
    archive's module imports TensorFlow, for the curves, which a campaign does not need)."""
    if not dest:
        return lambda: None
    from great_tf.evidence_archive import archive_into, restore_from

    restore_from(dest, root)
    return lambda: archive_into(dest, root)


def check_all_done(root, stages):
    """A one-line error (exit 2) naming the stages that failed, or else those not done (waiting
    for another stage, say): the campaign exits 0 only when every selected stage is done."""
    from great_tf import evidence
    from great_tf.errors import GreatError

    failed, left = evidence.unfinished(root, stages)
    if failed:
        more = f"; {len(left)} more not done" if left else ""
        raise GreatError(f"{len(failed)} of {len(stages)} stages failed ({names(failed)}){more}: see their "
                         f"logs in {os.path.join(root, 'logs')}, then run again with --rerun-failed")
    if left:
        raise GreatError(f"{len(left)} of {len(stages)} stages are not done ({names(left)}): each says why "
                         f"above; run again to continue")


def names(stages, shown=5):
    return ", ".join(stages[:shown]) + (f", ... ({len(stages) - shown} more)" if len(stages) > shown else "")


def resume_hint(argv):
    """What an interrupted campaign says: the command that continues it."""
    return (f"run `python -m trainers.evidence {shlex.join(argv)}` again to continue (finished stages "
            f"are kept, the interrupted one resumes from its last finished epoch)")


def stop_cleanly_on_signals():
    """SIGINT and SIGTERM stop the campaign as Ctrl-C does (the running stage is recorded as
    interrupted, its trainer stopped), even where the campaign was started in the background by a
    shell script, which makes it ignore SIGINT, an ignorance its trainers would inherit."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)


if __name__ == "__main__":
    flags.run_cli(main, interrupted_hint=resume_hint(sys.argv[1:]))
