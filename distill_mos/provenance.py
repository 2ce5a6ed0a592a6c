"""
What produced a score: package version, model (location and SHA-256 of its weights files), precision, backend,
device kind, window hop, and the calibrated interval if the model carries one.

Torch-free on purpose: `distill-mos --version` and `--resume`'s check read and hash files without loading torch.

    record = scorer.provenance            # computed once per DistillMOSScorer
    record.to_dict()                      # JSON-ready: the CLI's OUTPUT.provenance.json, Parquet metadata, the Space
    record.differences(other)             # ["precision: float32 here, bfloat16 there"], what --resume refuses on

Why a sidecar file next to the CLI's CSV/JSONL (`scores.csv.provenance.json`) and not columns or a comment header:
the record is the same for every row of a run (`--resume` refuses to mix runs), so repeating it in each row would
multiply the file's size, and a `#` header line would make `pandas.read_csv` need `comment="#"`. The CSV and JSONL
stay plain; the sidecar is written with the `.partial` file and renamed with it.
"""

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# Where the model will be published on the Hub; used when no local copy is found.
DEFAULT_HUB_ID = "distill-mos/distill-mos-v7"
MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
SIDECAR_SUFFIX = ".provenance.json"
# The key under which Parquet files (Ray) carry the record in their schema metadata.
PARQUET_METADATA_KEY = b"distill_mos.provenance"
# The fields whose difference changes the scores: what --resume refuses to mix.
SCORE_FIELDS = ("weights_sha256", "precision", "backend", "window_hop_s", "calibration")


class NoSuchModelFolder(ValueError):
    """`--model` / `from_pretrained` was given a path (not a Hub id) that does not exist."""


def find_model_location(checkout: Path) -> str:
    """
    $DISTILL_MOS_MODEL, else `checkout` (the repository root holding distill_mos/) or the copy `pip install` put in
    <prefix>/share/distill-mos, else the Hub id. A folder whose model.safetensors is a ~130-byte git-lfs pointer
    (a checkout without git-lfs) is not a model.
    """
    if os.environ.get("DISTILL_MOS_MODEL"):
        return os.environ["DISTILL_MOS_MODEL"]
    for folder in (checkout, Path(sys.prefix) / "share" / "distill-mos"):
        if all((folder / name).is_file() for name in MODEL_FILES) and (folder / "model.safetensors").stat().st_size > 1_000_000:
            return str(folder)
    return DEFAULT_HUB_ID


def looks_like_path(location: str) -> bool:
    """
    Whether `location` is meant as a folder rather than a Hub id ("owner/name"): absolute, relative to here or home
    (./, ../, ~), with a backslash or a drive letter, or more than one slash.
    """
    text = str(location)
    return (
        text.startswith(("/", ".", "~", "\\"))
        or "\\" in text
        or (len(text) > 1 and text[1] == ":")
        or text.count("/") > 1
    )


def check_model_location(location: str | os.PathLike) -> str:
    """`location` as given, or NoSuchModelFolder when it is a path that does not exist (not the Hub's repo-id error)."""
    text = os.fspath(location)
    if looks_like_path(text) and not Path(text).expanduser().exists():
        raise NoSuchModelFolder(f"{text}: no such folder (a model is a folder or a Hub id such as {DEFAULT_HUB_ID})")
    if Path(text).expanduser().exists() and not Path(text).expanduser().is_dir():
        raise NoSuchModelFolder(f"{text}: not a folder (a model is a folder holding config.json and model.safetensors)")
    return text


def sha256_of_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def weights_files(location: str) -> list[Path]:
    """The weights files of a model folder, or of a Hub id already in the local Hub cache (none otherwise)."""
    folder = Path(location).expanduser()
    if folder.is_dir():
        return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    try:
        cached = try_to_load_from_cache(location, "model.safetensors")
    except Exception:  # noqa: BLE001 - not a valid repo id: nothing cached under it
        return []
    return [Path(cached)] if isinstance(cached, str) else []


def calibration_at(location: str) -> dict | None:
    """The `mos_interval` in the config.json of a model folder (or of a Hub id in the local cache), else None."""
    folder = Path(location).expanduser()
    path = folder / "config.json" if folder.is_dir() else None
    if path is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(location, "config.json")
        except Exception:  # noqa: BLE001 - no hub library or not a repo id: nothing cached
            cached = None
        path = Path(cached) if isinstance(cached, str) else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("mos_interval")
    except (OSError, ValueError):
        return None


def weights_sha256(location: str) -> dict[str, str]:
    """{file name: SHA-256} of the model's weights files (empty when they cannot be found on this machine)."""
    return {path.name: sha256_of_file(path) for path in weights_files(location)}


@dataclass(frozen=True)
class Provenance:
    """
    What produced a set of scores.

    Attributes:
        package_version: distill_mos.__version__.
        model: the model's folder (absolute) or Hub id.
        weights_sha256: {weights file name: SHA-256}; empty when the weights are not files on this machine.
        precision: "float32" (exact), "bfloat16", "float16", or "float16-autocast" (`half=True`).
        backend: "torch", "onnx" (ONNX Runtime) or "custom" (a user's window scorer).
        device: the device kind, "cpu" or "cuda" ("auto" for Ray actors, which pick their own).
        window_hop_s: seconds between window starts on long audio.
        window_hop: "exact" (the model's own hop, as the original) or "fast" (a larger hop chosen by the user).
        calibration: the model config's `mos_interval` (see distill_mos.calibration), None when uncalibrated.
    """

    package_version: str
    model: str
    weights_sha256: dict[str, str] = field(default_factory=dict)
    precision: str = "float32"
    backend: str = "torch"
    device: str = "cpu"
    window_hop_s: float = 1.0
    window_hop: str = "exact"
    calibration: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Provenance":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """One short line naming everything that changes a score (the datasets column); the weights by hash."""
        digests = self.weights_sha256.items()
        weights = ", ".join(f"{name} sha256:{digest[:16]}" for name, digest in digests) or "weights not on file"
        hop = "exact" if self.window_hop == "exact" else f"fast, hop {self.window_hop_s:g} s"
        interval = ""
        if self.calibration:
            interval = f" | interval ±{self.calibration['half_width']:.3f} at {self.calibration['coverage']:.0%}"
        return (f"distill-mos {self.package_version} | {weights} | {self.precision} | {self.backend} | {self.device} | "
                f"window {hop}{interval}")

    def differences(self, other: "Provenance") -> list[str]:
        """What differs between two records in a way that changes the scores: ["precision: float32 vs bfloat16"]."""
        found = []
        for name in SCORE_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "weights_sha256":  # the same weights under another path or file name are the same model
                mine, theirs = sorted(mine.values()), sorted(theirs.values())
                if mine != theirs:
                    found.append(f"model: {self.model} vs {other.model} (other weights)")
            elif name == "calibration":
                if (mine or None) != (theirs or None):
                    shown = ("none" if c is None else f"±{c['half_width']:.3f}" for c in (mine, theirs))
                    found.append("calibration: " + " vs ".join(shown))
            elif mine != theirs:
                found.append(f"{name.removesuffix('_s')}: {mine} vs {theirs}")
        return found


def describe(
    location: str,
    precision: str = "float32",
    backend: str = "torch",
    device: str = "cpu",
    window_hop_s: float | None = None,
    exact_hop_s: float = 1.0,
    calibration: dict | None = None,
) -> Provenance:
    """The record for a model at `location` run with these settings (`window_hop_s` None: the exact hop)."""
    from . import __version__

    folder = Path(location).expanduser()
    model = str(folder.resolve()) if folder.is_dir() else str(location)
    fast = window_hop_s is not None and abs(window_hop_s - exact_hop_s) > 1e-9
    return Provenance(
        package_version=__version__,
        model=model,
        weights_sha256=weights_sha256(str(location)),
        precision=precision,
        backend=backend,
        device=device,
        window_hop_s=float(window_hop_s if fast else exact_hop_s),
        window_hop="fast" if fast else "exact",
        calibration=calibration,
    )


def of_scorer(scorer) -> Provenance:
    """The record of a `DistillMOSScorer` as it is set up (the scorer caches it as `scorer.provenance`)."""
    model = scorer.model
    rate = model.config.sampling_rate
    backend = scorer.execution.backend
    precision = "float16-autocast" if scorer.half else str(model.dtype).removeprefix("torch.")
    hop = scorer.max_window_hop
    return describe(
        getattr(model, "name_or_path", None) or "<in memory>",
        precision=precision,
        backend=backend,
        device=scorer.device.type,
        window_hop_s=None if hop is None else hop / rate,
        exact_hop_s=model.config.max_window_hop / rate,
        calibration=getattr(model.config, "mos_interval", None),
    )


# --- the CLI's sidecar file -----------------------------------------------------------------------------------------


def sidecar_path(output: Path) -> Path:
    """`scores.csv` -> `scores.csv.provenance.json` (and `scores.csv.partial` -> `scores.csv.partial.provenance.json`)."""
    return output.with_name(output.name + SIDECAR_SUFFIX)


def write_sidecar(output: Path, record: Provenance) -> Path:
    path = sidecar_path(output)
    path.write_text(record.to_json() + "\n", encoding="utf-8")
    return path


def read_sidecar(output: Path) -> Provenance | None:
    """The record written beside `output`, or None when there is none (an output of an older version)."""
    path = sidecar_path(output)
    if not path.is_file():
        return None
    try:
        return Provenance.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: not a provenance record ({error})") from None


def resume_conflict(output: Path, previous: Provenance | None, current: Provenance) -> str | None:
    """
    None when `current` may append to `output` (made with `previous`), else the one-line reason: which settings
    differ, e.g. "precision: float32 vs bfloat16".
    """
    if previous is None:
        return None
    differences = previous.differences(current)
    if not differences:
        return None
    return (f"{output}: cannot resume: its rows were made with other settings ({'; '.join(differences)}; "
            "earlier run vs this one); rerun with the earlier settings, or write a new output")


def rename_sidecar(source: Path, target: Path) -> None:
    """Moves the `.partial` output's record to the finished output's name, with the output itself."""
    if sidecar_path(source).is_file():
        os.replace(sidecar_path(source), sidecar_path(target))


def parquet_metadata(record: Provenance) -> dict[bytes, bytes]:
    """The schema metadata entry a Parquet file (Ray's `score_with_ray`) carries the record in."""
    return {PARQUET_METADATA_KEY: json.dumps(record.to_dict(), sort_keys=True).encode()}


def version_text(version: str, checkout: Path) -> str:
    """`distill-mos --version`: the package version and the default model with its weights' SHA-256 (no torch)."""
    location = find_model_location(checkout)
    digests = weights_sha256(location)
    lines = [f"distill-mos {version}", f"model: {location}"]
    lines += [f"  {name} sha256:{digest}" for name, digest in digests.items()] or [
        "  weights not on this machine yet (downloaded on first use)"
    ]
    return "\n".join(lines)


__all__ = [
    "DEFAULT_HUB_ID",
    "NoSuchModelFolder",
    "Provenance",
    "calibration_at",
    "check_model_location",
    "describe",
    "find_model_location",
    "of_scorer",
    "parquet_metadata",
    "read_sidecar",
    "resume_conflict",
    "sidecar_path",
    "write_sidecar",
]
