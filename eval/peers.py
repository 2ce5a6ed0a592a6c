"""
Other speech quality estimators scored on the same audio as Distill-MOS, for the benchmark's peer columns.

DNSMOS (Reddy et al., ICASSP 2021/2022): P.808 MOS and P.835 OVRL, from the `speechmos` package, which ships the
ONNX models in its wheel and runs them with onnxruntime, offline. Install: `pip install speechmos librosa
onnxruntime requests` (speechmos declares none of its dependencies).

Each peer sees exactly the waveform Distill-MOS sees: decoded by `datasets`, channel picked and resampled to 16 kHz
by the same code (`distill_mos.datasets.example_waveform` and `DistillMOSScorer.prepare`).
"""

from pathlib import Path

import numpy as np

PEERS = ("dnsmos",)


class DNSMOSPeer:
    """DNSMOS P.808 (`model_v8.onnx`) and P.835 (`sig_bak_ovr.onnx`, OVRL) as in Microsoft's dnsmos_local.py."""

    names = ("DNSMOS P.808", "DNSMOS P.835")

    def __init__(self):
        try:
            from speechmos import dnsmos
        except ImportError as error:
            raise RuntimeError(
                f"--peers dnsmos needs the speechmos package and its undeclared dependencies ({error}); "
                "pip install speechmos librosa onnxruntime requests"
            ) from None
        models = Path(dnsmos.__file__).resolve().parent / "dnsmos_models"
        self._model = dnsmos.DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))
        self.sampling_rate = dnsmos.SR

    def score_waveform(self, waveform: np.ndarray) -> dict[str, float]:
        """One 16 kHz mono float clip -> {"DNSMOS P.808": ..., "DNSMOS P.835": ...} (P.835: the OVRL score)."""
        clip = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)  # speechmos refuses samples outside -1..1
        out = self._model(clip, self.sampling_rate, False)
        return {"DNSMOS P.808": float(out["p808_mos"]), "DNSMOS P.835": float(out["ovrl_mos"])}

    def score_dataset(self, dataset, scorer, channel="first", audio_column="audio") -> dict[str, list]:
        """Scores every row of `dataset` through `datasets.map`: {name: [score or None]}."""
        from distill_mos.datasets import example_waveform

        def score_batch(batch):
            out = {name: [] for name in self.names}
            for audio in batch[audio_column]:
                try:
                    waveform, sampling_rate = example_waveform(audio, channel)
                    scores = self.score_waveform(scorer.prepare(waveform, sampling_rate))
                except Exception:  # noqa: BLE001 - the row is reported as failed by the benchmark
                    scores = {}
                for name in self.names:
                    out[name].append(scores.get(name))
            return out

        scored = dataset.map(score_batch, batched=True, batch_size=8, keep_in_memory=True,
                             remove_columns=dataset.column_names, desc="DNSMOS",
                             new_fingerprint=f"{dataset._fingerprint}-dnsmos")  # the closure cannot be hashed
        return {name: scored[name] for name in self.names}


def make_peer(name: str):
    if name.lower() in ("dnsmos", "dnsmos-p808", "dnsmos-p835"):
        return DNSMOSPeer()
    raise ValueError(f"unknown peer estimator {name!r}; available: {', '.join(PEERS)}")
