"""The zoo report: `python src/report.py [overrides]`.

Hydra composes `conf/report.yaml` (models, image_size, data / num_classes, batch_size, device,
timing; see docs/zoo-report.md); zoo.md, zoo.csv and the PNG plots go to
logs/report/runs/<time>/.
"""

from classicnets.cli import report_main

if __name__ == "__main__":
    report_main()
