"""luigi's examples/hello_world.py: a task without outputs."""

import luigi


class HelloWorldTask(luigi.Task):
    task_namespace = "examples"

    def run(self):
        print(f"{self.task_namespace} says: Hello world!")
