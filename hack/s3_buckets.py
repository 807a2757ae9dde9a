"""Creates the local stack's S3 buckets (idempotent). Reads the standard AWS_* variables."""

import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def ensure_buckets(names: list[str]) -> None:
    s3 = boto3.client(
        "s3",
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3}),
    )
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for name in names:
        if name in existing:
            continue
        try:
            s3.create_bucket(Bucket=name)
        except ClientError as error:
            if error.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise
        print(f"created bucket {name}", file=sys.stderr)


if __name__ == "__main__":
    ensure_buckets(sys.argv[1:])
