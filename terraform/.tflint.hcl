# tflint --recursive --config=$PWD/.tflint.hcl (absolute: a relative --config is looked up
# in each module) applies this to terraform/ and every module under it. Only the bundled
# terraform ruleset: the AWS ruleset plugin is not downloadable where the checks run.
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "all"
}
