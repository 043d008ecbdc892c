//! The domain model: what celery-cnc knows about a Celery cluster.

mod event;
mod query;
mod schedule;
mod stats;
mod task;
mod worker;

pub use event::{
    Event, EventKey, EventShapeError, TaskEvent, TaskEventKind, Timestamp, UnknownEvent,
    WorkerEvent, WorkerEventKind,
};
pub use query::{TaskFilter, TaskPage, TaskQuery, TaskSort, TaskSortField, TimeRange};
pub use schedule::{Schedule, ScheduleSpec};
pub use stats::{
    Heatmap, NameCount, RuntimeStats, StateCount, StatsQuery, ThroughputBucket, ThroughputQuery,
};
pub use task::{RelationKind, StoredEvent, Task, TaskRelation, TaskState, UnknownState};
pub use worker::{DEFAULT_HEARTBEAT_FREQ, Worker, WorkerStatus, WorkerStatusChange};
