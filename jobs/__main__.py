"""`python -m phifleet.jobs --config job.yaml`: the RayJob entrypoint (the Helm chart mounts the config file)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    parser = argparse.ArgumentParser(prog="python -m phifleet.jobs", description=__doc__)
    parser.add_argument("--config", required=True, help="job config, YAML or JSON (jobs.config.JobConfig)")
    parser.add_argument("--address", default=None, help="Ray address (overrides the config; default RAY_ADDRESS)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="Ray Data's own progress output and Ray's core_worker notices"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from phifleet.engine.errors import EngineError
    from phifleet.jobs.config import JobConfig
    from phifleet.jobs.errors import JobInputError
    from phifleet.jobs.pipeline import run_job, summary_text
    from phifleet.jobs.stderr_filter import quiet_ray_core
    from phifleet.protocol.errors import format_validation_error

    try:
        config = JobConfig.from_file(args.config)
        if args.address:
            config = config.model_copy(update={"address": args.address})
        with quiet_ray_core(args.verbose):
            manifest = run_job(config, verbose=args.verbose)
    except ValidationError as exc:
        print(f"phifleet.jobs: invalid config {args.config}: {format_validation_error(exc)}", file=sys.stderr)
        return 2
    except (JobInputError, EngineError, OSError) as exc:
        print(f"phifleet.jobs: {exc}", file=sys.stderr)
        return 2
    print(summary_text(manifest))
    return 0 if manifest["counts"]["accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
