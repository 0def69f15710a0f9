"""The beliefs stage: one BELIEFS row per trainable tick of a source, from the configured provider.

Which ticks get a belief:
- every non-excluded tick of an ordinary clip;
- not the post-event ticks (`excluded`): they are never trained on nor scored, so a belief for
  them would be paid for (llm) and never read;
- not the ticks of `{video_id}#prefix` clips (`parent_id` set): they are the parent's own ticks,
  whose beliefs the benchmark joins through parent_id and tick, so the same frames are never
  described twice (and never paid for twice).
Rows are sorted by (video_id, tick).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from vlalert.beliefs.llm import BeliefsIncomplete, FramesLoader, LLMBeliefProvider
from vlalert.beliefs.request import api_key_from_env
from vlalert.beliefs.rules import PROVIDER as RULES_PROVIDER
from vlalert.beliefs.rules import TickContext, rules_reply, tick_context
from vlalert.beliefs.text import belief_text
from vlalert.config import LabelsConfig, Phrasing, WorkflowConfig
from vlalert.schemas import table_from_rows


def scene_clips(scene_truth: Mapping[str, Any] | None) -> Mapping[str, Mapping[str, Any]]:
    """{video_id: clip truth} from a whole scene_truth.json, or from its `clips` mapping itself."""
    if not scene_truth:
        return {}
    clips = scene_truth.get("clips") if "clips" in scene_truth else scene_truth
    return clips or {}


def belief_contexts(
    labels: pa.Table, videos: pa.Table, cfg: WorkflowConfig, scene_truth: Mapping[str, Any] | None = None
) -> list[TickContext]:
    """The ticks that get a belief (see module docstring), joined with their clip and scene truth."""
    clips: dict[str, dict[str, Any]] = {}
    for clip in videos.to_pylist():
        if clip["video_id"] in clips:
            raise ValueError(f"videos table holds clip {clip['video_id']!r} twice")
        clips[clip["video_id"]] = clip
    truth = scene_clips(scene_truth)
    out = []
    missing: set[str] = set()
    for label in labels.to_pylist():
        if label["excluded"] or label.get("parent_id"):
            continue
        clip = clips.get(label["video_id"])
        if clip is None:
            missing.add(label["video_id"])
            continue
        out.append(tick_context(label, clip, cfg.labels, truth.get(label["video_id"])))
    if missing:
        raise ValueError(f"labels name clips that videos.parquet lacks: {sorted(missing)[:5]}")
    out.sort(key=lambda c: (c.video_id, c.tick))
    return out


def rules_row(ctx: TickContext, labels_cfg: LabelsConfig, phrasing: Phrasing = "varied") -> dict[str, Any]:
    reply = rules_reply(ctx, labels_cfg, phrasing)
    return {
        "video_id": ctx.video_id,
        "tick": ctx.tick,
        "analysis": reply.analysis,
        "belief": reply.belief.to_json(),
        "belief_text": belief_text(reply.belief),
        "provider": RULES_PROVIDER,
        "model": None,
        "prompt_sha256": None,
        "cost_usd": 0.0,
    }


def _default_frames_loader() -> FramesLoader:
    from vlalert.beliefs.frames import ClipReader

    return ClipReader()


def generate_beliefs(
    labels: pa.Table,
    videos: pa.Table,
    cfg: WorkflowConfig,
    scene_truth: Mapping[str, Any] | None = None,
    frames_loader: FramesLoader | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    client: Any = None,
    concurrency: int | None = None,
) -> pa.Table:
    """BELIEFS table of one source, from `cfg.beliefs.provider`.

    `scene_truth` is the source's scene_truth.json (synthetic clips) or None. With the llm
    provider this may raise `BudgetExceeded` / `RequestsFailed` (each carrying `.partial`, the
    rows done) or `LLMError`; everything answered is cached, so a rerun resumes for free.
    `environ` (default os.environ) is where the API key is read; `client` replaces the OpenAI client;
    `concurrency` (default beliefs.llm.max_concurrency) is this job's number of requests in flight,
    in the workflow its share of the `llm_requests` global resource.
    """
    contexts = belief_contexts(labels, videos, cfg, scene_truth)
    if cfg.beliefs.provider == "rules":
        return table_from_rows("beliefs", [rules_row(c, cfg.labels, cfg.beliefs.phrasing) for c in contexts])
    llm_cfg = cfg.beliefs.llm
    provider = LLMBeliefProvider(
        llm_cfg,
        cfg.labels,
        cfg.window,
        api_key=api_key_from_env(llm_cfg, os.environ if environ is None else environ),
        frames_loader=frames_loader or _default_frames_loader(),
        client=client,
        concurrency=concurrency,
        phrasing=cfg.beliefs.phrasing,
    )
    return provider.run(contexts, progress=cfg.beliefs.progress)


def partial_path(out: str | os.PathLike[str]) -> Path:
    """Where an incomplete llm run keeps the rows it has: `{source}.partial.parquet` beside the output."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".parquet") + ".partial.parquet")


def write_beliefs_job(
    out: str | os.PathLike[str],
    labels: pa.Table,
    videos: pa.Table,
    cfg: WorkflowConfig,
    scene_truth: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> pa.Table:
    """One beliefs job: the complete table at `out`, or the partial rows beside it and the error.

    A complete run removes the partial file an earlier incomplete run left, so a finished run
    holds no stale `.partial.parquet`.
    """
    from vlalert.schemas import write_table

    partial = partial_path(out)
    try:
        beliefs = generate_beliefs(labels, videos, cfg, scene_truth, **kwargs)
    except BeliefsIncomplete as err:
        write_table("beliefs", err.partial, partial)
        raise
    write_table("beliefs", beliefs, out)
    partial.unlink(missing_ok=True)
    return beliefs
