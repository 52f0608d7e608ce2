#!/bin/sh
# The buckets, and a MinIO user per service allowed its own bucket alone (least privilege):
# mlflow (the MLflow server's artifacts) and quantmill-worker (workers' artifacts, task
# results). Secrets come from the environment (compose passes them), never from arguments.
set -eu
mc mb -p s3/mlflow s3/quantmill
for pair in "mlflow:mlflow" "quantmill-worker:quantmill"; do
  user=${pair%%:*}; bucket=${pair#*:}
  cat > "/tmp/$user.json" <<POLICY
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::$bucket"]},
  {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": ["arn:aws:s3:::$bucket/*"]}
]}
POLICY
  mc admin policy create s3 "$bucket-only" "/tmp/$user.json"
  if [ "$user" = mlflow ]; then secret=$MLFLOW_S3_SECRET; else secret=$QUANTMILL_S3_SECRET; fi
  # mc admin user add takes the secret as an argument: it runs here, in a one-shot container
  # of its own, which no other service can inspect.
  mc admin user add s3 "$user" "$secret"
  mc admin policy attach s3 "$bucket-only" --user "$user"
done
