"""``tinydancer calibrate``: certify a routing threshold for a model from a routing database's outcomes,
and write the model with its calibration.

The calibration examples are the logged decisions with an outcome in the held-out share (``--holdout``,
by a hash of the request id): the requests ``tinydancer train --from-db`` left out, so the threshold is
certified on examples the model did not learn from. Risk control is Learn then Test
(:mod:`tinydancer.calibration`): with probability at least ``1 - delta``, at most ``1 - target`` of the
decisions sent to the lightweight model have a bad outcome. The walk over thresholds starts where one
routes 1% of the held-out decisions (:data:`tinydancer.feedback.MIN_ROUTED_SHARE`).
"""

from __future__ import annotations

import argparse
import math

from tinydancer.cli.options import open_fraction

HELP = "certify a routing threshold from a routing database's outcomes"
DESCRIPTION = ("Certify the threshold of a candidate model or a query router on the held-out logged decisions "
               "with outcomes of a routing database, and write the model with its calibration.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options to its subparser."""
    parser.add_argument("--from-db", required=True, metavar="DATABASE",
                        help="the routing database with logged decisions and outcomes")
    parser.add_argument("--model", required=True,
                        help="the model to calibrate: a candidate model file, or a query router file with --kind query")
    parser.add_argument("-o", "--out", required=True, help="the calibrated model file to write (.safetensors)")
    parser.add_argument("--kind", choices=("candidate", "query"), default="candidate",
                        help="which decisions and which model (default %(default)s)")
    parser.add_argument("--target", type=open_fraction, default=0.9,
                        help="the share of lightweight-routed decisions whose outcome must be good "
                             "(default %(default)s)")
    parser.add_argument("--delta", type=open_fraction, default=0.1,
                        help="the allowed probability that the guarantee fails (default %(default)s)")
    parser.add_argument("--holdout", type=open_fraction, default=0.3,
                        help="the held-out share of requests, as given to `train --from-db` (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Calibrate and write the model; the exit status is 0 (also when nothing could be certified: the file
    then routes nothing to the lightweight model, and the output says so).

    Raises:
        TinyDancerError: an unreadable database or model, no held-out outcomes, or an unwritable file.
    """
    from tinydancer.atomic_files import check_writable
    from tinydancer.errors import InvalidInputError, ModelFileError
    from tinydancer.feedback import calibrate_candidates, logged_examples, min_routed, save_candidate_model

    check_writable(args.out, ModelFileError)
    held = logged_examples(args.from_db, args.kind).split(args.holdout)[1]
    if len(held) == 0:
        raise InvalidInputError(f"{args.from_db}: no logged {args.kind} decision with an outcome in the held-out "
                                f"share ({args.holdout}); record outcomes first")
    if args.kind == "candidate":
        from tinydancer.model import load_model
        from tinydancer.router import candidate_model

        model = candidate_model(load_model(args.model), args.model)
        calibration = calibrate_candidates(model, held, target=args.target, delta=args.delta)
        save_candidate_model(model, calibration, args.out)
    else:
        from tinydancer.query_router import QueryRouter

        router = QueryRouter.load(args.model)
        if router.uses_prompt_length and held.prompt_length is None:
            raise InvalidInputError(f"{args.model} reads the prompt length, but not every held-out logged query "
                                    "has one")
        calibration = router.calibrate(held.inputs, held.good, args.target, args.delta,
                                       prompt_length=held.prompt_length if router.uses_prompt_length else None,
                                       min_routed=min_routed(len(held)))
        router.save(args.out)
    if calibration.certified and math.isfinite(calibration.threshold):
        print(f"wrote {args.out}: threshold {calibration.threshold:.4g} certified on {calibration.n} held-out "
              f"{args.kind} decisions ({calibration.failure_count} bad outcomes): at most {1 - args.target:.0%} "
              f"of lightweight-routed decisions bad, with probability {1 - args.delta:.0%}; "
              f"{calibration.lightweight_share:.1%} of them go to the lightweight model")
    else:
        print(f"wrote {args.out}: nothing could be certified on {calibration.n} held-out {args.kind} decisions "
              f"({calibration.failure_count} bad outcomes) at target {args.target} and delta {args.delta}: "
              "the model routes every decision to the powerful model; collect more outcomes or lower --target")
    return 0
