"""luigi's examples/foo.py, writing under the working directory instead of /tmp/bar."""

import time

import luigi


class Foo(luigi.WrapperTask):
    task_namespace = "examples"

    def run(self):
        print("Running Foo")

    def requires(self):
        for i in range(4):
            yield Bar(num=i)


class Bar(luigi.Task):
    task_namespace = "examples"
    num = luigi.IntParameter()

    def run(self):
        time.sleep(0.5)
        self.output().open("w").close()

    def output(self):
        return luigi.LocalTarget(f"data/bar/{self.num}")
