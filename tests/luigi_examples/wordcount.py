"""luigi's examples/wordcount.py with its input made by a task (luigi's reads files that must exist)."""

import luigi


class InputText(luigi.Task):
    date = luigi.DateParameter()

    def output(self):
        return luigi.LocalTarget(self.date.strftime("data/text/%Y-%m-%d.txt"))

    def run(self):
        with self.output().open("w") as f:
            f.write(f"luigi runs {self.date} and luigi counts words\n")


class WordCount(luigi.Task):
    date_interval = luigi.DateIntervalParameter()

    def requires(self):
        return [InputText(date) for date in self.date_interval.dates()]

    def output(self):
        return luigi.LocalTarget(f"data/wordcount/{self.date_interval}")

    def run(self):
        count = {}
        for f in self.input():
            for line in f.open("r"):
                for word in line.strip().split():
                    count[word] = count.get(word, 0) + 1
        with self.output().open("w") as out:
            for word in sorted(count):
                out.write(f"{word} {count[word]}\n")
