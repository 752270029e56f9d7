"""`python -m mesh`: the proxy alone, for hosts without the controller (the same options
as `canaryctl mesh proxy`)."""

from __future__ import annotations

import argparse
import sys

from mesh.config import MeshConfigError, config_from_flags, load_config, with_access_log
from mesh.runner import run
from mesh.server import MeshError, read_token


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mesh", description="canaryctl mesh proxy")
    p.add_argument("--config", help="routing table (YAML)")
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--service", default="app")
    p.add_argument("--version", dest="versions", action="append", default=[],
                   metavar="NAME=HOST:PORT")
    p.add_argument("--weight", dest="weights", action="append", default=[], metavar="NAME=N")
    p.add_argument("--admin", metavar="HOST:PORT")
    p.add_argument("--admin-token-file")
    p.add_argument("--workers", type=int, default=1,
                   help="processes sharing the listeners (SO_REUSEPORT)")
    p.add_argument("--access-log", metavar="PATH", help="JSON-lines access log")
    args = p.parse_args(argv)
    try:
        if args.config:
            config = load_config(args.config)
        else:
            config = config_from_flags(
                listen=args.listen, service=args.service, versions=args.versions,
                weights=args.weights, admin=args.admin,
            )
        if args.access_log:
            config = with_access_log(config, args.access_log)
        token_file = args.admin_token_file or (config.admin.token_file if config.admin else None)
        run(config, read_token(token_file), workers=args.workers, config_path=args.config)
    except (MeshConfigError, MeshError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
