"""Celery app used by celery-cnc's tests with real workers.

Broker and backend come from the environment so one app serves every test:

  CNC_BROKER    e.g. redis://127.0.0.1:6379/3 or amqp://guest:guest@127.0.0.1:5672/vh
  CNC_BACKEND   e.g. redis://127.0.0.1:6379/4 (default: same as the broker for
                redis, none otherwise)
  CNC_KEYPREFIX optional Redis global_keyprefix (transport option)
  CNC_RESULT_EXTENDED  "1": result_extended=True (task name, args... stored)
  CNC_DB_SCHEMA optional schema of the database backend's tables
                (database_table_schemas, for isolated PostgreSQL tests)

Task names are stable (`cnc.<name>`) so Rust tests can send them by name.
"""
import os
import time

from celery import Celery

BROKER = os.environ.get('CNC_BROKER', 'redis://127.0.0.1:6379/0')
BACKEND = os.environ.get('CNC_BACKEND') or None

app = Celery('cnc_testapp', broker=BROKER, backend=BACKEND)
app.conf.update(
    task_send_sent_event=True,
    # Task events only with `-E` (WorkerOpts::events) or enable_events.
    task_track_started=True,
    worker_pool_restarts=True,
    broker_connection_retry_on_startup=True,
    # Tests send several messages at once: keep a worker from hoarding them.
    worker_prefetch_multiplier=1,
)
if os.environ.get('CNC_RESULT_EXTENDED') == '1':
    app.conf.result_extended = True
if os.environ.get('CNC_DB_SCHEMA'):
    app.conf.database_table_schemas = {
        'task': os.environ['CNC_DB_SCHEMA'], 'group': os.environ['CNC_DB_SCHEMA']}
if os.environ.get('CNC_KEYPREFIX'):
    app.conf.broker_transport_options = {'global_keyprefix': os.environ['CNC_KEYPREFIX']}


@app.task(name='cnc.add')
def add(x, y):
    return x + y


@app.task(name='cnc.mul')
def mul(x, y):
    return x * y


@app.task(name='cnc.tsum')
def tsum(values):
    return sum(values)


@app.task(name='cnc.fail_always')
def fail_always(msg='boom'):
    raise ValueError(msg)


@app.task(name='cnc.retrying', bind=True, max_retries=1)
def retrying(self, x):
    # Asks for one retry, then fails with the original error.
    raise self.retry(exc=RuntimeError('transient problem %d' % self.request.retries),
                     countdown=1)


@app.task(name='cnc.sleep')
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name='cnc.on_custom', queue='custom')
def on_custom(x):
    return x


@app.task(name='cnc.limited', rate_limit='10/m')
def limited(x):
    return x


@app.task(name='cnc.echo')
def echo(*args, **kwargs):
    """Returns what it got, for unicode and hostile payloads."""
    return {'args': list(args), 'kwargs': kwargs}
