"""Hub command: push a model directory to the Hugging Face Hub (with a generated model card)."""

from __future__ import annotations

from .common import HelpFormatter


def register(sub) -> None:
    p = sub.add_parser(
        "push",
        help="upload a model directory and a model card to the Hugging Face Hub",
        description="Upload a model directory (safetensors/json/txt/model/onnx files only, never pickles) to "
        "the Hub repo org/name, with a README.md model card (training config and results) written into a "
        "temporary copy: the model directory itself is not modified. HF_ENDPOINT and HF_TOKEN are honoured. "
        "Load it back with --model hf://org/name.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="model directory to upload (config.json, model.safetensors, ...)")
    p.add_argument("--repo", required=True, help="Hub repository, org/name (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--token", default=None, help="Hub access token (default: HF_TOKEN or the saved login)")
    p.add_argument(
        "--results",
        default=None,
        help="results file for the card (default: the exp dir's results.md beside the model, else the "
        "recipe's RESULTS.md)",
    )
    p.add_argument("--message", default=None, help="commit message (default: 'astctc push <dir name>')")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.set_defaults(fn=_push)


def _push(args) -> None:
    from ..hub import push

    url = push(
        args.model,
        args.repo,
        private=args.private,
        token=args.token,
        results=args.results,
        commit_message=args.message,
        revision=args.revision,
    )
    print(url)
