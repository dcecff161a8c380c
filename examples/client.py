"""A client of `autoq serve`'s POST /generate that saves the images it gets back.

    autoq serve --profile profiles/ &
    python examples/client.py "a red circle on a blue background" "a green star" --out out/

The request shape is the one plain diffusers HTTP services use (prompt, width, height,
steps, guidance_scale), so a client written for those works unchanged.
"""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path

import httpx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path("out"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key-env", help="environment variable holding the API key")
    args = parser.parse_args()

    headers = {}
    if args.api_key_env:
        headers["X-API-Key"] = os.environ[args.api_key_env]
    args.out.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=args.url, headers=headers, timeout=300) as client:
        for i, prompt in enumerate(args.prompts):
            response = client.post("/generate", json={"prompt": prompt, "seed": args.seed + i})
            if response.status_code == 503:
                wait = response.headers.get("Retry-After", "?")
                print(f"{prompt!r}: server busy, retry after {wait}s")
                continue
            response.raise_for_status()
            body = response.json()
            path = args.out / f"{i:02d}.png"
            path.write_bytes(base64.b64decode(body["image"]))
            print(
                f"{path}  tier={body['tier']}  steps={body['steps']}  {body['latency_ms']:.0f} ms"
            )


if __name__ == "__main__":
    main()
