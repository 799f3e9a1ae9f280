"""b2luigi's tutorial exercise 01 as it is: no result_dir, so the output lands in ./parameter=1/ (b2luigi makes
the folder before run())."""

import b2luigi


class MyTask(b2luigi.Task):
    parameter = b2luigi.Parameter()

    def run(self):
        with open(self.get_output_file_name("output.txt"), "w") as f:
            f.write(f"{self.parameter}")

    def output(self):
        yield self.add_to_output("output.txt")


if __name__ == "__main__":
    b2luigi.process(MyTask(parameter=1))
