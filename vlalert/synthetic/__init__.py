"""The embedded synthetic demo corpus: procedurally rendered dashcam clips.

`scenarios` holds the traffic scenarios, their kinematics and ground truth, and the per-source
plan (ids, splits, faults); `render` turns a scene state into a frame; `writers` writes each real
source's own file formats. The entry point is `vlalert.sources.synthetic.make_demo_source`.
"""
