"""The `badas` gate provider on a toy-width V-JEPA2 (CPU, random weights, no hub)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch
from pydantic import ValidationError

from vlalert.badas.config import BadasConfig
from vlalert.badas.model import (
    BadasModel,
    BadasModelConfig,
    cv2_linear_resize,
    map_key,
    map_state_dict,
    p_from_logits,
    preprocess_frames,
    processor_resize,
    resized_shape,
    tiny_config,
)
from vlalert.badas.provider import BadasScorer, badas_scores
from vlalert.badas.windows import BLACK, badas_window, n_samples, sample_frame, sample_times, score_sample
from vlalert.config import TicksConfig, WindowConfig
from vlalert.devices import resolve_dtype
from vlalert.schemas import read_table, write_table

FPS = 30
N_FRAMES = 105  # 3.5 s at 30 fps


# ---------------------------------------------------------------- fixtures


def _frame(i: int) -> np.ndarray:
    """A 64x64 frame with a bright square that moves right by 2 px a frame over a dark road."""
    img = np.full((64, 64, 3), 40, dtype=np.uint8)
    img[40:, :, :] = 90
    x = (2 * i) % 48
    img[20:36, x : x + 16, 0] = 230
    return img


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    av = pytest.importorskip("av")
    path = tmp_path_factory.mktemp("badas") / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(N_FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def model():
    # init_std 0.5: random weights that spread p over (0, 1) instead of all ~0.5
    return BadasModel.from_config(tiny_config(), seed=3, init_std=0.5)


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("weights") / "badas-tiny")


def videos_table(path, video_id="c1", n_frames=N_FRAMES, fps=float(FPS)):
    return pa.Table.from_pylist(
        [{"video_id": video_id, "path": str(path), "fps": fps, "n_frames": n_frames, "meta": "{}"}]
    )


def bcfg(**kw):
    return BadasConfig(progress=False, **kw)


class ArrayLoader:
    """frames_loader for synthetic clips held in memory; counts reads."""

    def __init__(self, n_frames: int):
        self.frames = np.stack([_frame(i) for i in range(n_frames)])
        self.reads: list[list[int]] = []

    def __call__(self, path):
        return self

    def read(self, indices):
        self.reads.append(list(indices))
        return self.frames[list(indices)]


# ---------------------------------------------------------------- windows (pure)


def their_per_frame_windows(n_frames: int, fps: float, window: int = 16, target_fps: float = 8.0):
    """Open-BADAS's timing, from their code's structure (load_full_video_frames + SlidingWindowPredictor
    with stride 1): {8 fps sample k: original frames of the window whose score their per-frame output
    shows at k}."""
    duration = n_frames / fps
    if target_fps != fps:
        count, interval = int(round(duration * target_fps)), fps / target_fps
    else:
        count, interval = n_frames, 1.0
    sampled = []
    for i in range(count):
        frame = int(round(i * interval))
        if frame >= n_frames:
            break
        sampled.append(frame)
    out = {}
    for start in range(0, len(sampled) - window + 1):
        end = start + window
        if end < len(sampled):  # the prediction targets the sample after the window
            out[end] = tuple(sampled[start:end])
    return out


@pytest.mark.parametrize(("fps", "n_frames"), [(30.0, 105), (20.0, 100), (10.0, 40), (8.0, 30), (25.0, 90)])
def test_tick_windows_equal_open_badas_per_frame_windows(fps, n_frames):
    theirs = their_per_frame_windows(n_frames, fps)
    assert theirs and min(theirs) == 16  # nothing before 2 s
    for k, frames in theirs.items():
        for t in (k / 8, k / 8 + 0.06):  # a tick at t takes the score shown at sample floor(8 t)
            w = badas_window(t, fps, n_frames)
            assert w.complete and w.indices == frames, (t, w.indices, frames)


def test_window_at_30fps_rounds_halves_to_even_and_ends_an_eighth_of_a_second_before_t():
    w = badas_window(2.0, fps=30.0, n_frames=100)
    # samples 0..15 at 8 fps: frame round(i * 3.75); 7.5 -> 8, 22.5 -> 22, 37.5 -> 38, 52.5 -> 52
    assert w.indices == (0, 4, 8, 11, 15, 19, 22, 26, 30, 34, 38, 41, 45, 49, 52, 56)
    assert w.complete
    assert sample_frame(15, 30.0) == 56 and 56 / 30 < 2.0 - 1 / 8 + 1e-9
    # between samples the tick keeps the last score: 2.1 s still reads the window of sample 16
    assert badas_window(2.1, 30.0, 100) == w
    assert badas_window(2.125, 30.0, 100).indices == (
        4,
        8,
        11,
        15,
        19,
        22,
        26,
        30,
        34,
        38,
        41,
        45,
        49,
        52,
        56,
        60,
    )


def test_window_at_dad_20fps_and_at_8fps():
    assert badas_window(2.0, fps=20.0, n_frames=100).indices[:6] == (0, 2, 5, 8, 10, 12)  # round(2.5)=2
    assert badas_window(2.0, fps=8.0, n_frames=40).indices == tuple(range(16))
    assert n_samples(100, 20.0) == 40 and n_samples(30, 8.0) == 30


def test_window_before_two_seconds_is_incomplete_with_black_positions():
    w = badas_window(1.0, fps=30.0, n_frames=100)  # sample 8: samples -8..7
    assert not w.complete
    assert w.indices == (BLACK,) * 8 + (0, 4, 8, 11, 15, 19, 22, 26)
    assert score_sample(2.0 - 1e-9) == 16 and score_sample(1.99) == 15


def test_latest_timing_is_the_former_rule():
    w = badas_window(2.0, fps=30.0, n_frames=100, timing="latest")
    # sample k at 2 - (15 - k) / 8 s -> frame floor(time * 30): the last sample at t itself
    assert w.indices == (3, 7, 11, 15, 18, 22, 26, 30, 33, 37, 41, 45, 48, 52, 56, 60)
    assert badas_window(2.0, fps=4.0, n_frames=100, timing="latest").indices == (
        0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8,
    )  # fmt: skip
    early = badas_window(1.0, fps=30.0, n_frames=100, timing="latest")
    assert not early.complete and early.indices[:8] == (BLACK,) * 7 + (0,)  # sample 7 at 0 s
    first = badas_window(15 / 8, fps=30.0, n_frames=100, timing="latest")
    assert first.complete and first.indices[0] == 0
    with pytest.raises(ValueError, match="timing"):
        badas_window(2.0, 30.0, 100, timing="future")


def test_window_never_reads_past_the_last_frame():
    assert badas_window(2.0, fps=30.0, n_frames=57).indices[-1] == 56
    assert badas_window(2.0, fps=30.0, n_frames=50).indices[-2:] == (49, 49)
    assert badas_window(2.0, fps=30.0, n_frames=61, timing="latest").indices[-1] == 60


def test_sample_times_and_argument_checks():
    assert sample_times(2.0, frames=3, sample_fps=4.0) == [1.5, 1.75, 2.0]
    with pytest.raises(ValueError):
        badas_window(2.0, fps=0.0, n_frames=10)
    with pytest.raises(ValueError):
        badas_window(2.0, fps=30.0, n_frames=0)


# ---------------------------------------------------------------- preprocessing


def test_preprocess_resize_rule_and_centre_crop():
    cfg = tiny_config(crop_size=64).model_copy(update={"preprocess": "vjepa2"})
    assert cfg.short_side == 73  # int(64 * 256 / 224)
    assert resized_shape(72, 128, cfg) == (73, 129)
    assert resized_shape(146, 73, cfg) == (146, 73)
    # a frame already at resize size is only cropped: top = int(4.5) = 4, left = int(41.0) = 41
    frame = np.zeros((1, 73, 146, 3), dtype=np.uint8)
    frame[0, :, :, 0] = np.arange(146, dtype=np.uint8)[None, :]
    frame[0, :, :, 1] = np.arange(73, dtype=np.uint8)[:, None]
    px = preprocess_frames(frame, cfg)
    assert px.shape == (1, 3, 64, 64)
    red = (np.arange(41, 41 + 64) / 255.0 - 0.485) / 0.229
    green = (np.arange(4, 4 + 64) / 255.0 - 0.456) / 0.224
    np.testing.assert_allclose(px[0, 0, 10].numpy(), red, atol=1e-5)
    np.testing.assert_allclose(px[0, 1, :, 10].numpy(), green, atol=1e-5)
    np.testing.assert_allclose(px[0, 2].numpy(), (0.0 - 0.406) / 0.225, atol=1e-6)


def test_preprocess_constant_frame_of_any_size_normalises_exactly():
    cfg = tiny_config(crop_size=64)
    frames = np.full((3, 90, 160, 3), 128, dtype=np.uint8)
    px = preprocess_frames(frames, cfg)
    assert px.shape == (3, 3, 64, 64)
    for c, (m, s) in enumerate(zip(cfg.image_mean, cfg.image_std, strict=True)):
        np.testing.assert_allclose(px[:, c].numpy(), (128 / 255.0 - m) / s, atol=1e-5)


def test_badas_preprocessing_squashes_to_224_then_runs_the_vjepa2_processor():
    cfg = tiny_config()  # crop 64: the processor resizes 224 x 224 to 73 x 73, crops at 4
    assert cfg.preprocess == "badas" and cfg.squash_size == 224
    assert resized_shape(72, 128, cfg) == (73, 73)
    assert resized_shape(720, 1280, BadasModelConfig()) == (292, 292)  # the real model: 224 -> 292 -> 256
    assert resized_shape(72, 128, cfg.model_copy(update={"preprocess": "squash"})) == (73, 73)
    # the whole field of view survives: a 16:9 frame with a red left edge keeps red in the crop's
    # left columns, where the shortest-edge processor alone crops the edge away
    frame = np.zeros((1, 90, 160, 3), dtype=np.uint8)
    frame[0, :, :20, 0] = 255
    red = (255 / 255.0 - 0.485) / 0.229
    squashed = preprocess_frames(frame, cfg)
    assert squashed[0, 0, 32, 0] == pytest.approx(red, abs=1e-5)
    cropped = preprocess_frames(frame, cfg.model_copy(update={"preprocess": "vjepa2"}))
    assert cropped[0, 0, 32, 0] == pytest.approx((0 - 0.485) / 0.229, abs=1e-5)
    # every resize step rounds to whole grey levels (uint8), as cv2 and torchvision do
    ramp = np.tile(np.linspace(0, 255, 160).astype(np.uint8)[None, None, :, None], (1, 90, 1, 3))
    grey = preprocess_frames(ramp, cfg)[0, 0] * (0.229 * 255) + 0.485 * 255
    np.testing.assert_allclose(grey.numpy(), np.round(grey.numpy()), atol=1e-3)


def test_cv2_and_processor_resizes_round_as_their_libraries():
    # cv2: half-pixel bilinear without antialiasing, halves rounded up
    row = torch.tensor([[[[0.0, 1.0, 10.0, 20.0]]]])
    assert cv2_linear_resize(row, (1, 2)).flatten().tolist() == [1.0, 15.0]
    # torchvision on uint8 off AVX2 / on GPU: antialiased bilinear in float (a triangle filter twice
    # as wide when halving: 1.857, 13.0), rounded
    assert processor_resize(row, (1, 2)).flatten().tolist() == [2.0, 13.0]
    assert processor_resize(row, (1, 4)) is row  # same size: untouched


# ---------------------------------------------------------------- the network


def test_output_shapes_and_probabilities(model):
    loader = ArrayLoader(40)
    px = preprocess_frames(loader.frames, model.config)
    windows = px[torch.arange(40).unfold(0, 16, 8)]  # 4 windows of 16 frames
    assert windows.shape == (4, 16, 3, 64, 64)
    with torch.inference_mode():
        logits = model(windows)
    assert logits.shape == (4, 2) and logits.dtype == torch.float32
    p = model.collision_probability(windows)
    assert p.shape == (4,)
    assert torch.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.numpy(), torch.softmax(logits / 2.0, -1)[:, 1].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="tubelet"):
        model(windows[:, :15])


def test_temperature_changes_calibration_not_ranking():
    logits = torch.tensor([[0.0, 3.0], [1.0, 0.0], [0.0, 0.5], [2.0, 2.0]])
    p1, p2 = p_from_logits(logits, 1.0), p_from_logits(logits, 2.0)
    # p = sigmoid((l1 - l0) / T)
    expected = [1 / (1 + math.exp(-d)) for d in (3.0, -1.0, 0.5, 0.0)]
    np.testing.assert_allclose(p1.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(
        p2.numpy(), [1 / (1 + math.exp(-d / 2)) for d in (3.0, -1.0, 0.5, 0.0)], rtol=1e-6
    )
    assert torch.equal(torch.argsort(p1), torch.argsort(p2))
    assert p2[0] < p1[0] and p2[1] > p1[1] and p2[3] == p1[3] == 0.5  # pulled towards 0.5


def test_random_init_is_reproducible_from_the_seed():
    a = BadasModel.from_config(tiny_config(), seed=5)
    b = BadasModel.from_config(tiny_config(), seed=5)
    c = BadasModel.from_config(tiny_config(), seed=6)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    w = "temporal_processor.attention.in_proj_weight"
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])


def test_bfloat16_model_scores_close_to_float32(model):
    loader = ArrayLoader(32)
    px = preprocess_frames(loader.frames, model.config)
    x = px[torch.arange(32).unfold(0, 16, 16)]
    half = BadasModel.from_config(tiny_config(), seed=3, init_std=0.5).to(torch.bfloat16)
    np.testing.assert_allclose(
        half.collision_probability(x.to(torch.bfloat16)).numpy(),
        model.collision_probability(x).numpy(),
        atol=0.05,
    )
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


# ---------------------------------------------------------------- weights


def test_module_and_key_names_are_open_badas_own(model):
    keys = list(model.state_dict())
    assert {k.split(".")[0] for k in keys} == {"backbone", "temporal_processor", "classifier"}
    assert [k for k in keys if k.startswith("temporal_processor.")] == [
        "temporal_processor.attention.in_proj_weight",
        "temporal_processor.attention.in_proj_bias",
        "temporal_processor.attention.out_proj.weight",
        "temporal_processor.attention.out_proj.bias",
        "temporal_processor.norm.weight",
        "temporal_processor.norm.bias",
    ]
    assert model.temporal_processor.attention.num_heads == 8
    assert model.temporal_processor.norm.eps == 1e-5  # nn.LayerNorm's default, as theirs
    assert [k for k in keys if k.startswith("classifier.")][-2:] == [
        "classifier.classifier.8.weight",
        "classifier.classifier.8.bias",
    ]
    assert "backbone.encoder.embeddings.patch_embeddings.proj.weight" in keys


def test_key_mapping_strips_wrappers_and_drops_the_predictor():
    assert map_key("model.backbone.encoder.layer.0.norm1.weight") == "backbone.encoder.layer.0.norm1.weight"
    assert map_key("module.model.temporal_processor.norm.bias") == "temporal_processor.norm.bias"
    assert map_key("classifier.classifier.8.bias") == "classifier.classifier.8.bias"
    assert map_key("model.backbone.predictor.layer.0.norm1.weight") is None
    with pytest.raises(ValueError, match="both map to"):
        map_state_dict({"model.classifier.x": torch.zeros(1), "classifier.x": torch.zeros(1)})


def test_checkpoint_in_open_badas_layout_loads_to_the_same_scores(model, saved, tmp_path):
    from safetensors.torch import save_file

    state = {"model." + k: v.contiguous() for k, v in model.state_dict().items()}
    state["model.backbone.predictor.proj.weight"] = torch.zeros(4, 4)  # dropped on load
    save_file(state, str(tmp_path / "badas_open.safetensors"))
    (tmp_path / "config.json").write_text((saved / "config.json").read_text())
    loaded = BadasModel.from_pretrained(tmp_path / "badas_open.safetensors")
    x = preprocess_frames(ArrayLoader(16).frames, model.config)[None]
    np.testing.assert_allclose(
        loaded.collision_probability(x).numpy(), model.collision_probability(x).numpy(), atol=1e-6
    )

    del state["model.classifier.classifier.8.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match=r"1 missing keys \['classifier.classifier.8.weight'\]"):
        BadasModel.from_pretrained(tmp_path / "broken.safetensors")
    state["model.classifier.classifier.8.weight"] = torch.zeros(3, 24)
    save_file(state, str(tmp_path / "misshapen.safetensors"))
    with pytest.raises(ValueError, match="wrong shape"):
        BadasModel.from_pretrained(tmp_path / "misshapen.safetensors")


def test_wrong_config_format_and_missing_files_are_reported(saved, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a BADAS model config"):
        BadasModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "vlalert-badas/1"}))
    with pytest.raises(ValueError, match="convert-badas"):
        BadasModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        BadasModel.from_pretrained(tmp_path / "nothing-here")


def test_pickled_weights_are_refused_with_the_way_out(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "badas_open.pth")
    for path in (tmp_path, tmp_path / "badas_open.pth"):
        with pytest.raises(ValueError, match="vlalert convert-badas"):
            BadasModel.from_pretrained(path)
    with pytest.raises(ValueError, match="vlalert convert-badas"):
        BadasScorer(bcfg(model_path=str(tmp_path)))


# ---------------------------------------------------------------- config


def test_config_requires_a_pinned_revision_and_one_source():
    with pytest.raises(ValidationError, match="hub_revision"):
        BadasConfig(hub_repo="nexar-ai/badas-open")
    with pytest.raises(ValidationError, match="not both"):
        BadasConfig(hub_repo="a/b", hub_revision="abc", model_path="/m")
    with pytest.raises(ValidationError):
        BadasConfig(batch_size=0)
    assert "model_path" in BadasConfig().check_weights_source()
    assert BadasConfig(model_path="/m").check_weights_source() is None


def test_package_import_is_light():
    code = (
        "import sys, vlalert.badas; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- provider


def test_provider_writes_a_gate_table_for_a_real_mp4(mp4, saved, tmp_path):
    table = badas_scores(videos_table(mp4), bcfg(model_path=str(saved)), TicksConfig(), WindowConfig())
    # ticks at 1 Hz from window.span_s = 2 s to the last frame (3.47 s): 2 s and 3 s
    assert table.column("t_s").to_pylist() == [2.0, 3.0]
    assert table.column("provider").to_pylist() == ["badas", "badas"]
    ps = table.column("p_collision").to_pylist()
    assert all(0.0 <= p <= 1.0 for p in ps) and abs(ps[0] - ps[1]) > 1e-6
    out = write_table("gate", table, tmp_path / "gate.parquet")
    assert read_table("gate", out).equals(table)


def test_first_ticks_are_null_or_padded_as_configured(model):
    loader = ArrayLoader(N_FRAMES)
    ticks, window = TicksConfig(hz=2.0), WindowConfig(span_s=1.0)  # ticks at 1.0, 1.5, ... 3.0 s
    videos = videos_table("mem")
    null = badas_scores(videos, bcfg(), ticks, window, frames_loader=loader, model=model)
    assert null.column("t_s").to_pylist() == [1.0, 1.5, 2.0, 2.5, 3.0]
    p_null = null.column("p_collision").to_pylist()
    # ticks at 1.0 s and 1.5 s are 8 fps samples 8 and 12: their windows start before the clip,
    # where Open-BADAS's per-frame output is NaN
    assert p_null[:2] == [None, None] and None not in p_null[2:]

    inside = [0, 4, 8, 11, 15, 19, 22, 26]  # samples 0..7 of the 1.0 s window, frame round(i * 3.75)
    first = {}
    for mode, pad in (("black", None), ("repeat_first", 0)):
        padded = badas_scores(
            videos, bcfg(incomplete_window=mode), ticks, window, frames_loader=loader, model=model
        )
        p_pad = padded.column("p_collision").to_pylist()
        # padding never touches complete windows (other batch sizes may round differently)
        np.testing.assert_allclose(p_pad[2:], p_null[2:], atol=1e-6)
        frames = loader.frames[[pad or 0] * 8 + inside]
        if pad is None:
            frames[:8] = 0  # black frames before the clip, as their pad_window_frames
        x = preprocess_frames(frames, model.config)[None]
        assert p_pad[0] == pytest.approx(float(model.collision_probability(x)[0]), abs=1e-6)
        first[mode] = p_pad[0]
    assert abs(first["black"] - first["repeat_first"]) > 1e-6


def test_frames_read_for_each_tick_are_open_badas_windows(model):
    """Window -> tick timing on a hand-made 30 fps clip: tick t reads exactly the frames of the
    window whose score Open-BADAS shows at 8 fps sample floor(8 t)."""
    loader = ArrayLoader(N_FRAMES)
    ticks = TicksConfig(hz=3.0)  # 2.0, 2.333, 2.667, 3.0, 3.333 s: samples 16, 18, 21, 24, 26
    table = badas_scores(videos_table("mem"), bcfg(batch_size=1), ticks, WindowConfig(), loader, model)
    ts = table.column("t_s").to_pylist()
    assert [math.floor(t * 8 + 1e-6) for t in ts] == [16, 18, 21, 24, 26]
    theirs = their_per_frame_windows(N_FRAMES, FPS)
    assert loader.reads == [sorted(set(theirs[math.floor(t * 8 + 1e-6)])) for t in ts]
    # the tick at 2.0 s: samples 0..15, the newest frame (56, 1.867 s) is 1/8 s before the tick
    assert loader.reads[0] == [0, 4, 8, 11, 15, 19, 22, 26, 30, 34, 38, 41, 45, 49, 52, 56]
    x = preprocess_frames(loader.frames[list(theirs[16])], model.config)[None]
    assert table.column("p_collision")[0].as_py() == pytest.approx(
        float(model.collision_probability(x)[0]), abs=1e-6
    )


def test_temperature_override_keeps_the_ranking_of_ticks(model):
    loader = ArrayLoader(N_FRAMES)
    ticks, window = TicksConfig(hz=4.0), WindowConfig(span_s=2.0)
    videos = videos_table("mem")
    default = badas_scores(videos, bcfg(), ticks, window, frames_loader=loader, model=model)
    sharp = badas_scores(videos, bcfg(temperature=1.0), ticks, window, frames_loader=loader, model=model)
    p2 = np.array(default.column("p_collision").to_pylist())
    p1 = np.array(sharp.column("p_collision").to_pylist())
    assert len(p1) == 6 and not np.allclose(p1, p2)
    assert np.array_equal(np.argsort(p1), np.argsort(p2))
    # logit(p) = (l1 - l0) / T: halving T doubles the logit
    np.testing.assert_allclose(np.log(p1 / (1 - p1)), 2 * np.log(p2 / (1 - p2)), rtol=1e-4, atol=1e-5)


def test_batched_windows_score_as_one_by_one_and_frames_are_read_once_per_batch(model):
    videos = videos_table("mem")
    ticks = TicksConfig(hz=4.0)
    batched_loader, single_loader = ArrayLoader(N_FRAMES), ArrayLoader(N_FRAMES)
    batched = badas_scores(videos, bcfg(batch_size=16), ticks, WindowConfig(), batched_loader, model)
    single = badas_scores(videos, bcfg(batch_size=1), ticks, WindowConfig(), single_loader, model)
    np.testing.assert_allclose(
        batched.column("p_collision").to_pylist(), single.column("p_collision").to_pylist(), atol=1e-6
    )
    assert len(batched_loader.reads) == 1 and len(single_loader.reads) == 6
    # overlapping windows share frames: one decode of their union, each frame once
    assert batched_loader.reads[0] == sorted(set(batched_loader.reads[0]))


def test_saved_and_loaded_model_gives_identical_scores(model, saved):
    videos = videos_table("mem")
    loader = ArrayLoader(N_FRAMES)
    in_memory = badas_scores(videos, bcfg(), TicksConfig(hz=2.0), WindowConfig(), loader, model)
    from_disk = badas_scores(videos, bcfg(model_path=str(saved)), TicksConfig(hz=2.0), WindowConfig(), loader)
    assert from_disk.column("t_s").to_pylist() == in_memory.column("t_s").to_pylist()
    np.testing.assert_allclose(
        from_disk.column("p_collision").to_pylist(), in_memory.column("p_collision").to_pylist(), atol=1e-6
    )


def test_hub_weights_are_fetched_at_the_pinned_revision(monkeypatch, saved):
    import huggingface_hub

    calls = []

    def fake_download(repo_id, filename, revision, cache_dir=None):
        calls.append((repo_id, filename, revision))
        return str(saved / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    cfg = bcfg(hub_repo="someone/badas-tiny", hub_revision="0123abc")
    scorer = BadasScorer(cfg)
    assert sorted(calls) == [
        ("someone/badas-tiny", "config.json", "0123abc"),
        ("someone/badas-tiny", "model.safetensors", "0123abc"),
    ]
    assert scorer.model.config == BadasModel.from_pretrained(saved).config


def test_unreadable_clip_names_the_clip(model, tmp_path):
    from vlalert.video import VideoError

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(VideoError, match="clip broken: .*broken.mp4"):
        badas_scores(videos_table(bad, video_id="broken"), bcfg(), TicksConfig(), WindowConfig(), model=model)
