"""Hugging Face Hub sharing: `hf://org/name[@revision]` model specs, and pushing a model directory.

A model spec is either a local directory (returned unchanged) or `hf://org/name[@revision]`, which is
downloaded with huggingface_hub.snapshot_download into its cache (HF_HOME / HF_HUB_CACHE, HF_ENDPOINT,
HF_TOKEN and HF_HUB_OFFLINE are read by huggingface_hub itself). Only safe formats travel: safetensors,
json, txt, tokenizer models, onnx and the card; never pickles (*.bin, *.pt, *.pkl), which run code on load.
huggingface_hub is imported inside the functions, only for hf:// specs, so local loads pay nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

PREFIX = "hf://"
# what is uploaded and downloaded: data formats only (a pickle executes code when loaded)
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.onnx", "*.md"]
MODEL_FILES = ("config.json", "features.json", "model.safetensors")
TOKENIZER_FILES = ("chars.txt", "tokenizer.model")
# what git check-ref-format refuses: a revision names a branch, tag or commit, never a path
# (huggingface_hub writes refs/<revision> under its cache: "../../x" would land outside it)
_BAD_REVISION = re.compile(r"\.\.|@\{|//|/\.|\.lock(/|$)|[\x00-\x20\x7f~^:?*\[\\]|^[./]|[./]$|^@$")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`hf://org/name[@revision]` -> (repo_id, revision or None); ValueError for a malformed spec."""
    rest = spec[len(PREFIX) :]
    repo_id, _, revision = rest.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (_ and not revision):
        raise ValueError(f"{spec}: not a Hub model spec (expected hf://org/name or hf://org/name@revision)")
    if revision and _BAD_REVISION.search(revision):
        raise ValueError(
            f"{spec}: revision {revision!r} is not a branch, tag or commit name (git's ref rules: "
            "no '..', no leading or trailing '/' or '.', no spaces or ~^:?*[\\)"
        )
    return repo_id, revision or None


def resolve_model(spec: str | Path) -> Path:
    """A local model directory (unchanged, not checked here) or `hf://org/name[@revision]` downloaded
    into the huggingface_hub cache -> the local directory to load."""
    if not (isinstance(spec, str) and spec.startswith(PREFIX)):
        return Path(spec)
    repo_id, revision = parse_spec(spec)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        local = Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS))
    except GatedRepoError:
        raise ValueError(f"{spec}: the repository is gated: accept its terms and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"{spec}: no such model repository on the Hub (or it is private: set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{spec}: no revision {revision!r} in {repo_id}") from None
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{spec}: not in the local Hub cache and the Hub cannot be reached (offline or no network)"
        ) from None
    except HfHubHTTPError as e:
        raise ValueError(f"{spec}: Hub error: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise OSError(f"{spec}: download failed: {e}") from None
    if not (local / "model.safetensors").exists():
        raise FileNotFoundError(f"{spec}: the repository holds no model.safetensors (not an astctc model)")
    return local


def in_hub_cache(path: str | Path) -> bool:
    """Whether `path` (its target, when it is a link) lies in huggingface_hub's cache, whose files
    are links to shared blobs: writing one there corrupts the blob for every snapshot."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE).resolve()
    return Path(path).resolve().is_relative_to(cache)


def check_model_dir(model_dir: Path) -> None:
    """FileNotFoundError naming what is missing when `model_dir` is not a complete model directory."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model directory")
    for name in MODEL_FILES:
        if not (model_dir / name).exists():
            raise FileNotFoundError(f"{model_dir}: not a model directory (missing {name})")
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if cfg.get("ctc") is not None and not any((model_dir / t).exists() for t in TOKENIZER_FILES):
        raise FileNotFoundError(f"{model_dir}: not a model directory (missing chars.txt or tokenizer.model)")


def find_results(model_dir: Path) -> Path | None:
    """The nearest results file: the exp dir's results.md beside the model dir, else the recipe's RESULTS.md."""
    exp = model_dir.resolve().parent
    for cand in (model_dir / "results.md", exp / "results.md", exp.parent / "results.md"):
        if cand.is_file():
            return cand
    for up in exp.parents:
        if (up / "RESULTS.md").is_file():
            return up / "RESULTS.md"
        if (up / ".git").exists() or (up / "pyproject.toml").exists():
            break
    return None


def _train_config(model_dir: Path) -> tuple[Path, str] | None:
    """The training config saved in the exp dir beside the model dir, if any: (path, text)."""
    exp = model_dir.resolve().parent
    for name in ("train_config.yaml", "config.yaml", "train.yaml", "config.json", "train_config.json"):
        p = exp / name
        if p.is_file() and p.resolve() != (model_dir / "config.json").resolve():
            return p, p.read_text(encoding="utf-8", errors="replace")
    return None


def model_card(model_dir: Path, repo: str, results: Path | None = None) -> str:
    """The README.md of a pushed model: YAML front matter, then what it is, its training and its results."""
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    feats = json.loads((model_dir / "features.json").read_text(encoding="utf-8"))
    enc = cfg.get("encoder", {})
    ctc = cfg.get("ctc") or {}
    from safetensors import safe_open

    n_params = 0
    with safe_open(str(model_dir / "model.safetensors"), framework="np") as f:
        for k in f.keys():
            shape = f.get_slice(k).get_shape()
            size = 1
            for s in shape:
                size *= s
            n_params += size
    tok = next((t for t in TOKENIZER_FILES if (model_dir / t).exists()), None)
    train = _train_config(model_dir)
    lines = [
        "---",
        "library_name: astctc",
        "tags:",
        "- automatic-speech-recognition",
        "- ctc",
        "- audio-spectrogram-transformer",
        "---",
        "",
        f"# {repo}",
        "",
        "An Audio Spectrogram Transformer encoder with a CTC head, trained with astctc (speech recognition).",
        "",
        "## Model",
        "",
        f"- parameters: {n_params:,}",
        "- encoder: " + ", ".join(f"{k}={v}" for k, v in enc.items() if not isinstance(v, (dict, list))),
        f"- vocabulary: {ctc.get('vocab_size', 'n/a')} tokens ({tok or 'no tokenizer'})",
        "- features: " + ", ".join(f"{k}={v}" for k, v in feats.items() if not isinstance(v, (dict, list))),
    ]
    for name in cfg.get("classifiers") or {}:
        lines.append(f"- classification head: {name}")
    lines += ["", "## Training", ""]
    if train is not None:
        lines += [f"Training config ({train[0].name} of the run):", "", "```", train[1].rstrip(), "```"]
    else:
        lines.append("No training config was found beside the model directory.")
    lines += ["", "## Results", ""]
    if results is not None:
        lines += [f"From {results.name}:", "", results.read_text(encoding="utf-8", errors="replace").rstrip()]
    else:
        lines.append("No results file was given or found.")
    lines += [
        "",
        "## Use",
        "",
        "```sh",
        f"astctc transcribe --model hf://{repo} audio.wav",
        "```",
        "",
        "```python",
        "import astctc",
        "",
        f'model = astctc.load_model("hf://{repo}")',
        'print(model.transcribe("audio.wav").text)',
        "```",
        "",
    ]
    return "\n".join(lines)


def push(
    model_dir: str | Path,
    repo: str,
    private: bool = False,
    token: str | None = None,
    results: str | Path | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
) -> str:
    """Upload a model directory (and a generated model card) to the Hub repo `org/name` -> the repo's URL.
    The card is written into a temporary copy: the user's model directory is never modified."""
    d = Path(model_dir)
    check_model_dir(d)
    if len(repo.split("/")) != 2 or not all(repo.split("/")):
        raise ValueError(f"{repo}: not a Hub repository name (expected org/name)")
    res = Path(results) if results is not None else find_results(d)
    if res is not None and not res.is_file():
        raise FileNotFoundError(f"{res}: no such results file")
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="astctc-push-") as tmp:
        stage = Path(tmp) / "model"
        stage.mkdir()
        for f in d.iterdir():
            if f.is_file() and any(f.match(p) for p in ALLOW_PATTERNS) and f.name != "README.md":
                shutil.copy2(f, stage / f.name)
        (stage / "README.md").write_text(model_card(d, repo, res), encoding="utf-8")
        try:
            url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
            api.upload_folder(
                repo_id=repo,
                folder_path=stage,
                allow_patterns=ALLOW_PATTERNS,
                commit_message=commit_message or f"astctc push {d.name}",
                revision=revision,
            )
        except HfHubHTTPError as e:
            raise ValueError(f"{repo}: upload failed: {str(e).splitlines()[0]}") from None
        except (OSError, httpx2.TransportError) as e:  # no network, refused, timed out
            raise OSError(f"{repo}: upload failed: cannot reach {constants.ENDPOINT} ({e})") from None
    return str(url)
