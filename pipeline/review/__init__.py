"""The review page (`make review`): the audit's suspects of one run, decided one by one in a local web page;
the decisions are saved as data beside the run (pipeline.data.decisions) for the next run to apply."""
