"""The README's example: a three-step analysis, every step in its own container.

    containerbatch run examples/workflow.py Summary --samples 3 --image cb-demo:latest
"""

import json
import platform

import luigi

import containerbatch


class Simulate(luigi.Task):
    """Produce a fake sample; runs in whatever image `--image` names."""

    batch_system = "local"
    sample = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"results/sample_{self.sample}.json")

    def run(self):
        data = {"sample": self.sample, "values": [self.sample * i for i in range(10)],
                "python": platform.python_version()}
        with self.output().open("w") as handle:
            json.dump(data, handle)


class Fit(luigi.Task):
    sample = luigi.IntParameter()
    resources = {"memory": "256MB", "cpus": 1}

    def requires(self):
        return Simulate(sample=self.sample)

    def output(self):
        return luigi.LocalTarget(f"results/fit_{self.sample}.json")

    def run(self):
        with self.input().open() as handle:
            values = json.load(handle)["values"]
        with self.output().open("w") as handle:
            json.dump({"sample": self.sample, "mean": sum(values) / len(values)}, handle)


class Summary(luigi.Task):
    samples = luigi.IntParameter(default=3)

    def requires(self):
        return [Fit(sample=i) for i in range(self.samples)]

    def output(self):
        return luigi.LocalTarget(f"results/summary_{self.samples}.txt")

    def run(self):
        means = []
        for target in self.input():
            with target.open() as handle:
                means.append(json.load(handle)["mean"])
        with self.output().open("w") as handle:
            handle.write(f"{len(means)} fits, mean of means {sum(means) / len(means):.2f}\n")


if __name__ == "__main__":
    containerbatch.process([Summary(samples=3)], workers=3)
