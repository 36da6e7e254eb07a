"""`geospot serve`: the local web app (drop photos, see the probability map)."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="local web app: drop photos, see the probability map (needs geospot[serve])")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-files", type=int, default=32, help="photos per request (default 32)")
    p.add_argument("--max-file-mb", type=int, default=25, help="size limit per photo in MB (default 25)")
    p.add_argument("--max-megapixels", type=float, default=60.0, help="pixel limit per photo (default 60 MP)")
    p.add_argument("--no-gradcam", action="store_true", help="do not offer Grad-CAM on the page")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: FastAPI's form parser)
        import uvicorn
    except ImportError as exc:
        raise SystemExit(f"error: geospot serve needs the 'serve' extra ({exc.name} is missing): "
                         "pip install 'geospot[serve]'")
    if not 0 < args.port < 65536:
        raise SystemExit(f"error: --port {args.port}: must be 1..65535")
    if args.max_files < 1 or args.max_file_mb < 1 or args.max_megapixels <= 0:
        raise SystemExit("error: --max-files, --max-file-mb and --max-megapixels must be positive")
    from geospot.models.checkpoint import CheckpointError
    from geospot.serve.app import create_app
    from geospot.serve.uploads import Limits

    limits = Limits(max_files=args.max_files, max_file_bytes=args.max_file_mb * 2**20,
                    max_pixels=int(args.max_megapixels * 1e6))
    try:
        app = create_app(args.model, limits=limits, gradcam=not args.no_gradcam)
    except (CheckpointError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this address can upload photos",
              file=sys.stderr)
    print(f"geospot: open http://{args.host}:{args.port}/ (Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
