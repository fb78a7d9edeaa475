"""The built-in demo: ``tag-train rl`` with no arguments (CPU, at most ~15 minutes).

Pipeline, with a progress bar at every stage:

1. **Faces**: SynthFACS renders labelled faces with exact landmarks (``tag_model.synth``),
   written in RAF-DB's on-disk layout and read back with the RAF-DB reader.
2. **Traces**: the real trace builder (quality filter -> geometric AU detector -> activated
   list -> offline template teacher -> rejection sampling) writes a TAG dataset on disk.
3. **Tiny VLM**: ``make_tiny_vlm("qwen2_vl")`` (~2.2 M parameters). Its vision tower (+ merger)
   is first trained alone as an emotion classifier, landmark regressor and AU detector, and
   to tell in each visual token which grid cell it is (the language model's attention averages
   values, which carry no position of their own), on the trace images plus ``warmup_extra``
   fresh SynthFACS faces (rendered in memory, and every face also mirrored), then the heads
   are dropped: this stands in for the pretrained encoder a real backbone has (a random tower
   gives the language model nothing to learn the class from). Its held-out accuracy is
   printed.
4. **SFT warm start** with TRL's ``SFTTrainer`` (vision tower and merger frozen). Steps 1-4
   are cached under ``<cache_dir>/<preset>-<hash>/`` (default ``./.tag-cache/demo``, or
   ``$TAG_CACHE/demo``), so the next run starts at RL.
5. **GRPO** with TRL's ``GRPOTrainer`` and the three TAG rewards (the preset's
   ``rl_temperature``, ``rl_lr`` and ``rl_grounding_weight``).

Greedy evaluation (format rate, accuracy, mean box IoU against the detector, grounding F, AU
hallucination rate) runs after SFT and after RL; the change is reported with a paired
bootstrap 95% CI over the same faces, and the sampled rewards' change over GRPO (last fifth
of the steps minus the first) with a two-sample one over steps. Beside it the demo prints two references on the same held-out faces: the per-AU
mean training box (what placing boxes without looking scores) and linear read-outs of the
frozen tower's visual tokens fitted on the trace faces (``tag_train._probes``: what the
features SFT's language model reads make linearly available; cached with the base model).
The run folder (default ``runs/demo-<YYYYmmdd-HHMMSS>``) gets:

- ``metrics.jsonl``: every SFT and GRPO log line (``phase`` says which);
- ``reward_curves.png``: format, answer, grounding and total reward over GRPO steps;
- ``samples/sample_<i>.png``: predicted AU boxes (green) beside the detector's (red), with
  the completion text in ``sample_<i>.txt``;
- ``summary.json``: the evaluations and their references (``mean_box_baseline_iou_found``,
  ``tower_probes``), the reward components at the start and end of RL, the reward's share of
  a GRPO step, the timings and the goal checks.

``--preset smoke`` runs the same path at toy size for CI. ``--preset ablation`` reuses the
default preset's cached SFT and runs GRPO twice from it, with and without the grounding reward
(``_ablation``: ``ablation.md``, ``ablation.json``, ``ablation_curves.png``);
``smoke-ablation`` is that path at toy size. The terminal shows one progress bar per phase and
the result lines; ``--verbose`` adds the trainers' per-step logs and the libraries' warnings.

Modules: ``_presets`` (sizes, cache key), ``_ablation`` (the two-arm table), ``_base`` (tiny VLM, vision warm-up, cached base
model), ``_evaluate`` (greedy evaluation and its references), ``_summary`` (goals, printed
lines, plots, pictures) and ``_run`` (the pipeline and ``tag-train rl``'s demo flags).
"""

from tag_train.demo._evaluate import _iou_stats as _iou_stats
from tag_train.demo._evaluate import greedy_eval, mean_box_baseline
from tag_train.demo._presets import PRESETS, DemoPreset
from tag_train.demo._run import main, run_demo
from tag_train.demo._summary import demo_goals

__all__ = [
    "PRESETS",
    "DemoPreset",
    "demo_goals",
    "greedy_eval",
    "main",
    "mean_box_baseline",
    "run_demo",
]
