"""b2luigi's tutorial, exercises 01-04 (examples/tutorial/Ex01..Ex04) in one file."""

import b2luigi


class MyTask(b2luigi.Task):
    parameter = b2luigi.IntParameter()

    def run(self):
        with open(self.get_output_file_name("output.txt"), "w") as f:
            f.write(f"{self.parameter}")

    def output(self):
        yield self.add_to_output("output.txt")


class MyOtherTask(b2luigi.Task):
    parameter = b2luigi.IntParameter()

    def requires(self):
        return MyTask(parameter=self.parameter)

    def output(self):
        yield self.add_to_output("output2.txt")

    def run(self):
        with open(self.get_input_file_names("output.txt")[0]) as f:
            number = int(f.read())
        with open(self.get_output_file_name("output2.txt"), "w") as f:
            f.write(f"{number**2}")


class MyWrapperTask(b2luigi.WrapperTask):
    max_value = b2luigi.IntParameter()

    def requires(self):
        return [MyOtherTask(parameter=value) for value in range(self.max_value)]


class MyAverageTask(b2luigi.Task):
    max_value = b2luigi.IntParameter()

    def requires(self):
        return [MyOtherTask(parameter=value) for value in range(self.max_value)]

    def output(self):
        yield self.add_to_output("average.txt")
        yield self.add_to_output("sum.txt")

    def run(self):
        numbers = []
        for filename in self.get_input_file_names("output2.txt"):
            with open(filename) as f:
                numbers.append(int(f.read()))
        with open(self.get_output_file_name("average.txt"), "w") as f:
            f.write(f"{sum(numbers) / len(numbers)}")
        with open(self.get_output_file_name("sum.txt"), "w") as f:
            f.write(f"{sum(numbers)}")


if __name__ == "__main__":
    b2luigi.set_setting("result_dir", "results")
    b2luigi.process([MyWrapperTask(max_value=3), MyAverageTask(max_value=4)], workers=4)
