"""luigi's examples/dynamic_requirements.py, writing under the working directory instead of /tmp."""

import os
import random as rnd
import time

import luigi


class Configuration(luigi.Task):
    seed = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"data/Config_{self.seed}.txt")

    def run(self):
        time.sleep(0.5)
        rnd.seed(self.seed)
        result = ",".join([str(x) for x in rnd.sample(list(range(300)), rnd.randint(3, 6))])
        with self.output().open("w") as f:
            f.write(result)


class Data(luigi.Task):
    magic_number = luigi.IntParameter()

    def output(self):
        return luigi.LocalTarget(f"data/Data_{self.magic_number}.txt")

    def run(self):
        time.sleep(0.2)
        with self.output().open("w") as f:
            f.write(f"{self.magic_number}")


class Dynamic(luigi.Task):
    seed = luigi.IntParameter(default=1)

    def output(self):
        return luigi.LocalTarget(f"data/Dynamic_{self.seed}.txt")

    def run(self):
        config = self.clone(Configuration)
        yield config
        with config.output().open() as f:
            data = [int(x) for x in f.read().split(",")]
        data_dependent_deps = [Data(magic_number=x) for x in data]
        yield data_dependent_deps
        with self.output().open("w") as f:
            f.write(f"done {sorted(os.path.basename(d.output().path) for d in data_dependent_deps)}")
