"""Write any dataset config as litdata shards: `python src/shard.py data=<config> out=<dir>`.

Then train from them with `python src/train.py data=shards data.path=<dir or s3://...>`
(docs/training/data.md, "Sharded streaming").
"""

from classicnets.cli import shard_main

if __name__ == "__main__":
    shard_main()
