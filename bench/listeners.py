"""Simulated listeners: 200 hidden linear tastes over the take features, four takes of a random vibe a
round, the best voted up and the worst down (choice noise 0.5 on a utility of sd ~1.4 between takes);
bench/simulation.py runs the loop. Plans come from the champion's planner on the committed free-text
prompts (resources/vibe_prompts.json). Reports the posterior mean's accuracy on held-out pairwise choices
after 5 / 10 / 20 votes and the regret curve against an anonymous listener (bench/listeners.png), and
logs both to MLflow with the model version.

    python bench/listeners.py [model_dir]   → bench/listeners.json, bench/listeners.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from simulation import Simulation, simulate  # bench/: on the path when a bench script runs

from bayes_beats import load_generator
from bayes_beats.evaluate import vibe_prompts
from bayes_beats.model.plans import DEFAULT_TEMPERATURE

OUT = Path("bench/listeners.json")
PLOT = Path("bench/listeners.png")


def plot(sim: Simulation, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = range(1, sim.rounds + 1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(rounds, sim.regret_anonymous, "o--", label="anonymous (the vibe's plan)")
    ax.plot(rounds, sim.regret, "o-", label="with the listener's posterior")
    ax.set_xlabel("round (4 takes heard, 2 votes)")
    ax.set_ylabel("regret (hidden utility)")
    ax.set_title(f"{sim.listeners} simulated listeners", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def main(model_dir: str = "models/finetuned") -> dict:
    gen = load_generator(model_dir)
    plans = gen.distributions([p["prompt"] for p in vibe_prompts()])
    if plans is None:
        raise SystemExit(f"{model_dir} has no planner: nothing to tilt")
    sim = simulate(plans, listeners=200, rounds=10)  # takes at the product's temperature
    calibrated = simulate(plans, listeners=200, rounds=10, temperature=1.0)  # takes over the plan's full spread
    plot(sim, PLOT)
    registered = Path("metrics/register.json")
    version = f"v{json.loads(registered.read_text())['version']}" if registered.is_file() else model_dir
    result = {
        "model": str(version),
        "listeners": sim.listeners,
        "vibes": len(plans),
        "pairwise_accuracy": sim.accuracy,
        "agreement_with_noiseless_taste": sim.agreement,
        "ceiling": sim.ceiling,  # the hidden taste itself on the held-out noisy choices
        "temperature": DEFAULT_TEMPERATURE,
        "at_temperature_1": {
            "pairwise_accuracy": calibrated.accuracy,
            "agreement_with_noiseless_taste": calibrated.agreement,
            "ceiling": calibrated.ceiling,
        },
        "regret": sim.regret,
        "regret_anonymous": sim.regret_anonymous,
        "regret_reduction_last_round": round(1 - sim.regret[-1] / sim.regret_anonymous[-1], 3),
        "plot": str(PLOT),
    }
    try:
        import mlflow

        from bayes_beats.core.tracking import tracking_uri

        mlflow.set_tracking_uri(tracking_uri())
        mlflow.set_experiment("bayes-beats")
        with mlflow.start_run(run_name="bench-listeners", tags={"stage": "bench", "model": str(version)}):
            for votes, acc in sim.accuracy.items():
                mlflow.log_metric("pairwise_accuracy", acc, step=votes)
            for r, (served, anonymous) in enumerate(zip(sim.regret, sim.regret_anonymous, strict=True), 1):
                mlflow.log_metrics({"regret": served, "regret_anonymous": anonymous}, step=r)
            mlflow.log_artifact(str(PLOT))
    except Exception as err:  # the figures stand without a tracking server
        result["mlflow"] = f"not logged: {err}"
    return result


if __name__ == "__main__":
    results = main(*sys.argv[1:])
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
