"""The embedded synthetic demo corpus: procedurally rendered dashcam clips.

`scenarios` holds the traffic scenarios, their kinematics and ground truth; `render` turns a scene
state into a frame; `writers` writes each real source's own file formats. The per-source plan (ids,
splits, faults) and the entry point are in vlalert.sources.synthetic (`DEMOS`, `make_demo_source`).
"""
