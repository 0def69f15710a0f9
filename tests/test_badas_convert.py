"""Open-BADAS for real: their checkpoint format -> `vlalert convert-badas` -> our scores equal theirs.

The reference below re-implements Open-BADAS's inference from the structure of its published code
(getnexar/BADAS-Open at 01368cf: `badas/utils/video.py` `EnhancedVideoClassifier`,
`_TemporalAttentionProcessor`, `_MLPClassifierHead`, `load_full_video_frames`;
`badas/utils/sliding_window.py` `SlidingWindowPredictor`; `badas/models/vjepa.py`
`_predict_sliding_window`; `badas/badas_loader.py`: window 16, stride 1, 8 fps, 224 px). Nothing
of vlalert.badas is used by the reference. Where their code calls a library that is not installed
here (cv2, torchvision through transformers' VJEPA2VideoProcessor), the reference calls the torch
primitive that library computes with; `test_cv2_resize_emulation_*` checks our stand-in for cv2
against an independent float64 implementation of cv2's bilinear rule.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlalert.badas.config import BadasConfig
from vlalert.badas.model import (
    BadasModel,
    cv2_linear_resize,
    read_model_config,
    tiny_config,
)
from vlalert.badas.provider import BadasScorer
from vlalert.cli import main
from vlalert.config import TicksConfig, WindowConfig
from vlalert.ticks import tick_times
from vlalert.video import VideoFrames

# the repository's sibling shared/ (as tests/conftest.py's SHARED_REAL); tests skip when it is absent
DAD_CLIP = Path(__file__).resolve().parents[2] / "shared/data/real/dad/videos/testing/positive/000478.mp4"

# toy widths of the reference model (their hyper-parameters, at toy size)
HIDDEN, LAYERS, HEADS, CROP = 48, 2, 4, 64
HPARAMS = {
    "num_classes": 2,
    "temporal_num_heads": 8,
    "head_hidden_dim": 24,
    "head_num_layers": 3,
    "head_dropout": 0.1,
}


# ------------------------------------------------------------------ their model, re-implemented


class TheirMLPClassifierHead(nn.Module):
    def __init__(self, in_dim, hidden_dim, num_layers, num_classes, dropout=0.1):
        super().__init__()
        layers = []
        current_dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(current_dim, hidden_dim))
            layers.append(nn.GELU())
            layers.append(nn.LayerNorm(hidden_dim))
            layers.append(nn.Dropout(dropout))
            current_dim = hidden_dim
        layers.append(nn.Linear(current_dim, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x):
        return self.classifier(x)


class TheirTemporalAttentionProcessor(nn.Module):
    def __init__(self, hidden_size, num_heads):
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x):
        out, _ = self.attention(x, x, x)
        out = self.norm(out)
        return out.mean(dim=1)


class TheirEnhancedVideoClassifier(nn.Module):
    """Their class; the backbone is built from a toy VJEPA2Config instead of from_pretrained."""

    def __init__(self, backbone_config, config):
        super().__init__()
        from transformers import VJEPA2Model

        hidden_size = backbone_config.hidden_size  # 1024 (hard-coded there) for ViT-L
        self.backbone = VJEPA2Model(backbone_config)  # encoder + predictor, as theirs
        self.temporal_processor = TheirTemporalAttentionProcessor(hidden_size, config["temporal_num_heads"])
        self.classifier = TheirMLPClassifierHead(
            in_dim=hidden_size,
            hidden_dim=config["head_hidden_dim"],
            num_layers=config["head_num_layers"],
            num_classes=config["num_classes"],
            dropout=config["head_dropout"],
        )

    def forward(self, pixel_values):
        # Their call is self.backbone(pixel_values=...); the installed transformers names the
        # argument pixel_values_videos. The forward also runs the predictor, whose output is unused.
        outputs = self.backbone(pixel_values_videos=pixel_values)
        hidden = outputs.last_hidden_state
        pooled = self.temporal_processor(hidden)
        return self.classifier(pooled)


def their_model(seed: int = 11) -> TheirEnhancedVideoClassifier:
    from transformers import VJEPA2Config

    cfg = VJEPA2Config(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        crop_size=CROP,
        mlp_ratio=2.0,
        pred_hidden_size=24,
        pred_num_hidden_layers=1,
        pred_num_attention_heads=4,
        pred_num_mask_tokens=4,
    )
    torch.manual_seed(seed)
    model = TheirEnhancedVideoClassifier(cfg, HPARAMS)
    # "trained" weights: spread enough that windows get clearly different probabilities
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                gain = 8.0 if name.startswith("classifier.") else 1.5
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model.eval()


def save_their_checkpoint(model: nn.Module, path: Path) -> Path:
    """A Lightning-style checkpoint: "model."-prefixed state_dict + hyper_parameters, as theirs."""
    ckpt = {
        "epoch": 7,
        "global_step": 1234,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"model": dict(HPARAMS), "lr": 1e-4},
    }
    torch.save(ckpt, path)
    return path


# ------------------------------------------------------------------ their inference, re-implemented


def their_load_full_video_frames(video: str, target_size=(224, 224), target_fps=8.0):
    """load_full_video_frames: frame round(i * fps / 8) for i < round(duration * 8), resized to 224 x 224.

    cv2.VideoCapture/cv2.resize are not installed: frames come from our decoder (RGB already), and
    cv2.resize(INTER_LINEAR) is torch's bilinear without antialiasing, rounded half up.
    """
    with VideoFrames(video) as reader:
        total_frames = len(reader)
        original_fps = reader.container_fps
        video_duration = total_frames / original_fps
        if target_fps and target_fps != original_fps:
            target_frame_count = int(round(video_duration * target_fps))
            frame_interval = original_fps / target_fps
        else:
            target_frame_count = total_frames
            frame_interval = 1.0
        wanted = []
        for i in range(target_frame_count):
            frame_to_read = int(round(i * frame_interval))
            if frame_to_read >= total_frames:
                break
            wanted.append(frame_to_read)
        frames = reader.read(wanted)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(target_size[1], target_size[0]), mode="bilinear", align_corners=False)
    x = torch.floor(x + 0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy(), wanted


def their_processor(frames_array: np.ndarray, crop_size: int) -> torch.Tensor:
    """VJEPA2VideoProcessor(crop_size) on a (T, H, W, 3) uint8 window -> (T, 3, crop, crop).

    size = shortest_edge int(crop * 256 / 224); torchvision resize(uint8, bilinear, antialias=True)
    (float interpolate, round_, uint8: its path off AVX2 CPUs and on GPUs); transformers' centre
    crop at int((h - crop) / 2); fused rescale + normalize: (x - mean / (1/255)) / (std / (1/255)).
    """
    video = torch.from_numpy(frames_array).permute(0, 3, 1, 2).contiguous()
    shortest_edge = int(crop_size * 256 / 224)
    h, w = video.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = shortest_edge, int(shortest_edge * long / short)
    new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
    if (new_h, new_w) != (h, w):
        video = F.interpolate(
            video.float(), size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True
        )
        video = video.round_().to(torch.uint8)
    top, left = int((new_h - crop_size) / 2.0), int((new_w - crop_size) / 2.0)
    video = video[..., top : top + crop_size, left : left + crop_size]
    mean = torch.tensor([0.485, 0.456, 0.406]) * (1.0 / (1 / 255))
    std = torch.tensor([0.229, 0.224, 0.225]) * (1.0 / (1 / 255))
    return (video.to(torch.float32) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def their_sliding_window_per_frame(
    model: nn.Module, all_frames: np.ndarray, window_size=16, stride=1, only_targets=None
):
    """SlidingWindowPredictor.predict_sliding_windows + _create_predictive_frame_array, stride 1.

    `only_targets` (not theirs, for speed): windows whose target is not listed are not run (NaN).
    """
    total_frames = len(all_frames)
    windows = []
    if total_frames <= window_size:
        windows.append((0, total_frames))
    else:
        start = 0
        while start <= total_frames - window_size:
            windows.append((start, start + window_size))
            start += stride
    predictions, targets = [], []
    for start_idx, end_idx in windows:
        if only_targets is not None and end_idx not in only_targets:
            continue
        window_frames = all_frames[start_idx:end_idx]
        if len(window_frames) < window_size:  # pad_window_frames: black frames at the start
            pad = np.zeros((window_size - len(window_frames), *window_frames.shape[1:]), window_frames.dtype)
            window_frames = np.concatenate([pad, window_frames])
        processed = their_processor(window_frames, CROP).unsqueeze(0)
        with torch.no_grad():
            outputs = model(processed)
            outputs_scaled = outputs / 2.0  # apply_temperature_scaling(outputs, temperature=2.0)
            probs = torch.softmax(outputs_scaled, dim=1)[:, 1].cpu().numpy()
        predictions.append(probs[0])
        targets.append(end_idx)  # the prediction is for the frame after the window
    per_frame = np.full(total_frames, np.nan, dtype=np.float32)
    for target, prediction in zip(targets, predictions, strict=True):
        if 0 <= target < total_frames:
            per_frame[target] = prediction
    return per_frame  # stride 1: no gaps to interpolate


# ------------------------------------------------------------------ the tests


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("badas-open")
    theirs = their_model()
    pth = save_their_checkpoint(theirs, tmp / "badas_open.pth")
    toy = tiny_config(crop_size=CROP, hidden_size=HIDDEN, layers=LAYERS, heads=HEADS)
    config_json = tmp / "toy_config.json"
    config_json.write_text(json.dumps(toy.model_dump(mode="json")))
    out = tmp / "converted"
    assert main(["convert-badas", str(pth), str(out), "--config", str(config_json)]) == 0
    return theirs, out


def test_converted_checkpoint_has_their_keys_without_the_predictor(converted):
    from safetensors import safe_open

    theirs, out = converted
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    expected = sorted(k for k in theirs.state_dict() if not k.startswith("backbone.predictor."))
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == expected
        assert f.metadata()["format"] == "vlalert-badas/2"
        assert f.metadata()["source"] == "badas_open.pth"
    cfg = read_model_config(out / "config.json")
    assert (cfg.temporal_heads, cfg.head_hidden, cfg.head_layers, cfg.temperature) == (8, 24, 3, 2.0)
    assert cfg.preprocess == "badas" and cfg.squash_size == 224


@pytest.mark.skipif(not DAD_CLIP.exists(), reason="real DAD clip not present")
def test_per_window_probabilities_equal_their_forward_pass_on_a_real_dad_clip(converted):
    theirs, out = converted
    frames_224, sampled = their_load_full_video_frames(str(DAD_CLIP))
    assert len(sampled) == 40 and sampled[:6] == [0, 2, 5, 8, 10, 12]  # round(i * 2.5), halves to even
    # ours: the gate provider on ticks at 4 Hz (2.0, 2.25, ... 4.75 s), every other 8 fps sample
    clip = {"video_id": "000478", "path": str(DAD_CLIP), "fps": 20.0, "n_frames": 100}
    ts = tick_times(100, 20.0, TicksConfig(hz=4.0), WindowConfig(span_s=2.0))
    ks = [round(t * 8) for t in ts]
    assert ks == list(range(16, 40, 2))
    per_frame = their_sliding_window_per_frame(theirs, frames_224, only_targets=set(ks))
    assert np.isnan(per_frame[:16]).all() and not np.isnan(per_frame[ks]).any()
    scorer = BadasScorer(BadasConfig(model_path=str(out), progress=False, batch_size=6))
    ours = np.array(scorer(clip, ts), dtype=np.float64)
    np.testing.assert_allclose(ours, per_frame[ks], atol=1e-5, rtol=0)
    assert np.ptp(ours) > 0.1  # the weights tell windows apart: the comparison is not vacuous


def test_cv2_resize_emulation_is_within_one_grey_level_of_cv2s_rule():
    """Our cv2.resize stand-in against an independent float64 implementation of cv2's INTER_LINEAR
    coordinate rule (half-pixel centres, clamped at the edges, no antialiasing)."""

    def cv2_rule(img: np.ndarray, w: int, h: int) -> np.ndarray:
        def axis(dst: int, src: int):
            f = (np.arange(dst) + 0.5) * (src / dst) - 0.5
            i0 = np.floor(f).astype(int)
            a = f - i0
            a, i0 = np.where(i0 < 0, 0.0, a), np.maximum(i0, 0)
            a, i0 = np.where(i0 >= src - 1, 0.0, a), np.minimum(i0, src - 1)
            return i0, np.minimum(i0 + 1, src - 1), a

        y0, y1, ay = axis(h, img.shape[0])
        x0, x1, ax = axis(w, img.shape[1])
        x = img.astype(np.float64)
        rows = x[y0] * (1 - ay)[:, None, None] + x[y1] * ay[:, None, None]
        out = rows[:, x0] * (1 - ax)[None, :, None] + rows[:, x1] * ax[None, :, None]
        return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)

    if DAD_CLIP.exists():
        with VideoFrames(DAD_CLIP) as reader:
            frames = reader.read([0, 45, 90])
    else:
        frames = np.random.default_rng(0).integers(0, 256, (3, 72, 128, 3), dtype=np.uint8)
    ours = cv2_linear_resize(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), (224, 224))
    ours = ours.permute(0, 2, 3, 1).numpy().astype(int)
    ref = np.stack([cv2_rule(f, 224, 224) for f in frames]).astype(int)
    diff = np.abs(ours - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # a 4 -> 2 downscale averages pixel pairs; a half rounds up, as cv2's fixed point does
    row = torch.tensor([[[[0.0, 1.0, 10.0, 20.0]]]])
    assert cv2_linear_resize(row, (1, 2)).flatten().tolist() == [1.0, 15.0]


def test_convert_refuses_what_weights_only_cannot_read(tmp_path, capsys):
    import argparse

    pth = tmp_path / "pickled.pth"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "hyper_parameters": argparse.Namespace(lr=1)}, pth)
    assert main(["convert-badas", str(pth), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "weights_only=True" in err and "refused" in err
    assert not (tmp_path / "out").exists()


def test_convert_reports_missing_or_misshapen_weights(tmp_path, capsys):
    theirs = their_model()
    state = {f"model.{k}": v for k, v in theirs.state_dict().items() if "classifier.classifier.8" not in k}
    torch.save({"state_dict": state}, tmp_path / "cut.pth")
    toy = tiny_config(crop_size=CROP, hidden_size=HIDDEN, layers=LAYERS, heads=HEADS)
    (tmp_path / "toy.json").write_text(json.dumps(toy.model_dump(mode="json")))
    args = ["--config", str(tmp_path / "toy.json")]
    assert main(["convert-badas", str(tmp_path / "cut.pth"), str(tmp_path / "o1"), *args]) == 2
    assert (
        "2 missing keys ['classifier.classifier.8.bias', 'classifier.classifier.8.weight']"
        in capsys.readouterr().err
    )
    # the released ViT-L config against toy weights: shapes do not fit
    torch.save(theirs.state_dict(), tmp_path / "bare.pth")
    assert main(["convert-badas", str(tmp_path / "bare.pth"), str(tmp_path / "o2")]) == 2
    assert "missing keys" in capsys.readouterr().err
    torch.save([1, 2], tmp_path / "list.pth")
    assert main(["convert-badas", str(tmp_path / "list.pth"), str(tmp_path / "o3")]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_bare_state_dict_with_ddp_prefix_converts_too(tmp_path):
    from vlalert.badas.convert import convert_checkpoint

    theirs = their_model(seed=2)
    torch.save({f"module.{k}": v for k, v in theirs.state_dict().items()}, tmp_path / "bare.pth")
    toy = tiny_config(crop_size=CROP, hidden_size=HIDDEN, layers=LAYERS, heads=HEADS, temporal_heads=8)
    toy = toy.model_copy(update={"head_hidden": 24})
    result = convert_checkpoint(tmp_path / "bare.pth", tmp_path / "out", toy)
    n_predictor = sum(1 for k in theirs.state_dict() if k.startswith("backbone.predictor."))
    assert result.dropped == n_predictor > 0
    loaded = BadasModel.from_pretrained(tmp_path / "out")
    x = torch.randn(2, 16, 3, CROP, CROP)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), theirs(x).numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_badas_gate_runs_in_the_dag_on_real_dad_clips(converted, real_data, tmp_path):
    """`gate_provider: badas` with a converted toy checkpoint, through ingest and gate on real DAD."""
    import subprocess
    import sys

    import yaml

    from vlalert.schemas import read_table

    repo = Path(__file__).resolve().parents[1]
    _, weights = converted
    dad = real_data / "dad"
    cfg = {
        "run": "real-badas",
        "results": str(tmp_path / "results"),
        "demo": {"enabled": False},
        "sources": {
            "dad": {
                "kind": "dad",
                "root": str(dad),
                "consensus": str(dad / "badas_consensus_dad_subset.csv"),
                "gate_provider": ["badas"],
                "split_map": {"testing": "test"},
            }
        },
        "gate": {"provider": ["badas"], "badas": {"model_path": str(weights), "device": "cpu"}},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-s", str(repo / "Snakefile")]
    cmd += ["--directory", str(tmp_path), "--configfile", str(tmp_path / "cfg.yaml"), "--cores", "2"]
    results = tmp_path / "results"
    targets = [str(results / "gate" / "dad.parquet"), str(results / "benchmark" / "test.parquet")]
    res = subprocess.run([*cmd, *targets], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-4000:]
    gate = read_table("gate", results / "gate" / "dad.parquet")
    assert gate.num_rows == 15 and set(gate.column("provider").to_pylist()) == {"badas"}
    ps = gate.column("p_collision").to_pylist()
    assert all(p is not None and 0.0 <= p <= 1.0 for p in ps) and len({round(p, 6) for p in ps}) > 1

    # The Open-BADAS baseline in the summary: the score stage's code on these real test clips,
    # with a cache that holds only generated texts (no heads trained: the baselines alone).
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from vlalert.cache.store import vector_array
    from vlalert.heads.fsm import FSMConfig
    from vlalert.metrics.config import ScoringConfig
    from vlalert.score import score_split
    from vlalert.summary import summarize_scores

    bench = pq.read_table(results / "benchmark" / "test.parquet")
    assert bench.num_rows > 0
    n = bench.num_rows
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    pq.write_table(
        pa.table(
            {
                "video_id": bench.column("video_id"),
                "tick": bench.column("tick").cast(pa.int32()),
                "z": vector_array(np.zeros((n, 4), np.float16)),
                "r": vector_array(np.zeros((n, 4), np.float16)),
                "generated_text": pa.array(["<|ACTION|> SILENT <|/ACTION|>"] * n),
            }
        ),
        cache_dir / "part-00000.parquet",
    )
    scores = score_split(bench, cache_dir, {}, gate, FSMConfig())
    badas = scores.filter(pc.equal(scores.column("policy"), "badas"))
    gated = scores.filter(pc.equal(scores.column("policy"), "gate"))
    assert badas.num_rows == gated.num_rows > 0
    assert badas.column("p_alert").to_pylist() == gated.column("p_alert").to_pylist()
    summary = summarize_scores(scores, bench, ScoringConfig(), 1.0)
    assert "badas" in set(summary.column("policy").to_pylist())
