"""b2luigi's quick start (docs/quickstart.rst), with a seeded random number so two runs can be compared."""

import random

import b2luigi


class MyNumberTask(b2luigi.Task):
    some_parameter = b2luigi.IntParameter()

    def output(self):
        yield self.add_to_output("output_file.txt")

    def run(self):
        random_number = random.Random(self.some_parameter).random()
        with open(self.get_output_file_name("output_file.txt"), "w") as f:
            f.write(f"{random_number}\n")


class MyAverageTask(b2luigi.Task):
    def requires(self):
        for i in range(4):
            yield self.clone(MyNumberTask, some_parameter=i)

    def output(self):
        yield self.add_to_output("average.txt")

    def run(self):
        summed_numbers = 0
        counter = 0
        for input_file in sorted(self.get_input_file_names("output_file.txt")):
            with open(input_file) as f:
                summed_numbers += float(f.read())
                counter += 1
        with open(self.get_output_file_name("average.txt"), "w") as f:
            f.write(f"{summed_numbers / counter}\n")


if __name__ == "__main__":
    b2luigi.set_setting("result_dir", "results")
    b2luigi.process(MyAverageTask(), workers=4)
