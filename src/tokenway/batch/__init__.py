"""Work that can wait: OpenAI's Files and Batch APIs and async tasks, run by every replica at
low priority.

service.BatchService   the API's operations (files, batches), scoped to the key; owns the
                       replica's runner (gateway/files.py and gateway/batches.py serve it)
store.JobStore         files, batches and the batch lifecycle on the `store` database
lines.LineQueue        request lines as a shared work queue: leases, sends, results, and
                       the ledger outbox
runner.Runner          claims lines and runs them in-process through the gateway
                       (gateway/internal.py); survives crashes
lifecycle.Lifecycle    validates new batches and ends finished ones (the runner's
                       housekeeping calls it), accounting sends that were lost
throttle.Throttle      what batch work yields to (queued interactive requests, a lagging
                       event loop)
tasks.TaskService      async tasks' operations (gateway/tasks.py serves them): a task is a
                       batch of one line, run by the same runner
task_store.TaskStore   tasks' rows, results and webhook outbox on the same database
webhook                tasks' webhook signatures and their delivery (`Deliverer`)
errors                 409 and 503 of the job store's endpoints
validate               the input file's checks, with OpenAI's errors
objects, ids           the API's object shapes and identifiers
"""
