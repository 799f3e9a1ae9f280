"""b2luigi's own test workflows (tests/core: folder structures, temporary files, dispatch, requires/inherits,
hashed parameters; docs: custom settings), with settings set only in the main block."""

import os
import sys

import b2luigi

# a script that reads its own command line at import time (the node sees the same)
LABEL = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "no-label"


class TemporaryTask(b2luigi.Task):
    def output(self):
        yield self.add_to_output("test.txt")

    @b2luigi.on_temporary_files
    def run(self):
        with open(self.get_output_file_name("test.txt"), "w") as f:
            f.write("Test")


class DispatchedTask(b2luigi.DispatchableTask):
    number = b2luigi.IntParameter()

    def output(self):
        yield self.add_to_output("some_file.txt")
        yield self.add_to_output("some_other_file.txt")

    def process(self):
        with open(self.get_output_file_name("some_file.txt"), "w") as f:
            f.write(f"Done {self.number}")
        with open(self.get_output_file_name("some_other_file.txt"), "w") as f:
            f.write("Done")


class Hashed(b2luigi.Task):
    values = b2luigi.ListParameter(hashed=True)

    def output(self):
        yield self.add_to_output("hashed.txt")

    def run(self):
        with open(self.get_output_file_name("hashed.txt"), "w") as f:
            f.write(",".join(str(v) for v in self.values))


class TaskA(b2luigi.Task):
    some_parameter = b2luigi.IntParameter()
    some_other_parameter = b2luigi.IntParameter()

    def output(self):
        yield self.add_to_output("test.txt")

    def run(self):
        with open(self.get_output_file_name("test.txt"), "w") as f:
            f.write(f"{self.some_parameter} {self.some_other_parameter} {LABEL}")


@b2luigi.requires(TaskA, some_parameter=3)
class TaskB(b2luigi.Task):
    another_parameter = b2luigi.IntParameter()

    def output(self):
        yield self.add_to_output("out.dat")

    def run(self):
        with open(self.get_input_file_names("test.txt")[0]) as f:
            text = f.read()
        with open(self.get_output_file_name("out.dat"), "w") as f:
            f.write(f"{text} -> {self.another_parameter} {b2luigi.get_setting('my_custom_setting', 'unset')}")


@b2luigi.inherits(TaskA, without="some_other_parameter")
class Merger(b2luigi.Task):
    def requires(self):
        for other in range(2):
            yield self.clone(TaskA, some_other_parameter=other)

    def output(self):
        yield self.add_to_output("merged.txt")

    def run(self):
        texts = []
        for name in sorted(self.get_input_file_names("test.txt")):
            with open(name) as f:
                texts.append(f.read())
        with open(self.get_output_file_name("merged.txt"), "w") as f:
            f.write("|".join(texts))


class All(b2luigi.WrapperTask):
    def requires(self):
        yield TemporaryTask()
        yield DispatchedTask(number=7)
        yield Hashed(values=[1, 2, 3])
        yield TaskB(another_parameter=5, some_other_parameter=1)
        yield Merger(some_parameter=4)


if __name__ == "__main__":
    # set only here: the node never runs this block, containerbatch.b2luigi carries the values over
    b2luigi.set_setting("result_dir", os.path.join("out", "results"))
    b2luigi.set_setting("use_parameter_name_in_output", False)
    b2luigi.set_setting("my_custom_setting", "custom-value")
    b2luigi.process(All(), workers=4, ignore_additional_command_line_args=True)
