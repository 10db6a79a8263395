//! Power loss: the store runs on a filesystem that keeps only what was fsynced.
//!
//! `LossyFs` is a FUSE filesystem in memory (mounting it needs root, which CI has; elsewhere the
//! test says SKIPPED, and fails under `CI=true`). Each file has the bytes a disk holds (changed
//! only by `fsync`) and the writes made since, which a power loss may or may not have put on
//! the disk: at the cut, every operation fails with EIO, then each pending write (and
//! truncation) is kept or dropped at random, in order, and what results is the disk the next
//! start finds. Names (create, unlink) are kept at once, as on a journaling filesystem.
//!
//! Per seed: a store on the filesystem takes concurrent inserts, claims and completions; after
//! a number of acknowledged operations the seed picks, the power goes; the store is dropped,
//! and a new one opens what the disk kept. Every insert and completion that was acknowledged
//! must be there, and the file must pass SQLite's integrity check. The negative control runs
//! the same with `synchronous=OFF` and must see a loss: without it, a test that cannot fail.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    Request, WriteFlags,
};
use punctual_core::{ClaimRequest, JobId, JobOptions, JobState, Store};
use punctual_sqlite::{SqliteOptions, SqliteStore};
use punctual_testkit::fixtures::{NOW, new_job, node};

/// Seeds per run: enough to cut at many points of the write path, within seconds.
const SEEDS: u64 = 40;

/// No caching of names or attributes: every size the kernel reports is the filesystem's own.
const TTL: Duration = Duration::ZERO;

#[derive(Clone)]
enum Pending {
    Write { offset: usize, data: Vec<u8> },
    Truncate(usize),
}

fn apply(bytes: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::Write { offset, data } => {
            if bytes.len() < offset + data.len() {
                bytes.resize(offset + data.len(), 0);
            }
            bytes[*offset..offset + data.len()].copy_from_slice(data);
        }
        Pending::Truncate(size) => bytes.resize(*size, 0),
    }
}

#[derive(Default)]
struct Node {
    name: String,
    /// What the disk holds.
    durable: Vec<u8>,
    /// What readers see: `durable` with `pending` applied.
    current: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Default)]
struct Disk {
    files: BTreeMap<u64, Node>,
    next_inode: u64,
}

#[derive(Clone, Default)]
struct LossyFs {
    disk: Arc<Mutex<Disk>>,
    cut: Arc<AtomicBool>,
    syncs: Arc<AtomicUsize>,
}

impl LossyFs {
    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn down(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// The power goes: every operation fails from now on.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// The machine starts again: each file is what the disk held plus the pending changes the
    /// dice kept, in order.
    fn restart(&self, rng: &mut Rng) {
        let mut disk = self.disk();
        for file in disk.files.values_mut() {
            let mut bytes = std::mem::take(&mut file.durable);
            for change in std::mem::take(&mut file.pending) {
                if rng.below(2) == 0 {
                    apply(&mut bytes, &change);
                }
            }
            file.current = bytes.clone();
            file.durable = bytes;
        }
        drop(disk);
        self.cut.store(false, Ordering::SeqCst);
    }

    fn attr(inode: u64, size: u64) -> FileAttr {
        let directory = inode == INodeNo::ROOT.0;
        FileAttr {
            ino: INodeNo(inode),
            size,
            blocks: size.div_ceil(512),
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: if directory {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if directory { 0o755 } else { 0o644 },
            nlink: if directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for LossyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        let disk = self.disk();
        let found = (parent == INodeNo::ROOT)
            .then(|| {
                disk.files
                    .iter()
                    .find(|(_, file)| OsStr::new(&file.name) == name)
            })
            .flatten();
        match found {
            Some((inode, file)) => reply.entry(
                &TTL,
                &LossyFs::attr(*inode, file.current.len() as u64),
                Generation(0),
            ),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino == INodeNo::ROOT {
            return reply.attr(&TTL, &LossyFs::attr(ino.0, 0));
        }
        if self.down() {
            return reply.error(Errno::EIO);
        }
        match self.disk().files.get(&ino.0) {
            Some(file) => reply.attr(&TTL, &LossyFs::attr(ino.0, file.current.len() as u64)),
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino == INodeNo::ROOT {
            return reply.attr(&TTL, &LossyFs::attr(ino.0, 0));
        }
        if self.down() {
            return reply.error(Errno::EIO);
        }
        let mut disk = self.disk();
        let Some(file) = disk.files.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(size) = size {
            let change = Pending::Truncate(size as usize);
            apply(&mut file.current, &change);
            file.pending.push(change);
        }
        reply.attr(&TTL, &LossyFs::attr(ino.0, file.current.len() as u64));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        let mut disk = self.disk();
        let found = disk
            .files
            .iter()
            .find(|(_, file)| parent == INodeNo::ROOT && OsStr::new(&file.name) == name)
            .map(|(inode, _)| *inode);
        match found {
            Some(inode) => {
                disk.files.remove(&inode);
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        if ino != INodeNo::ROOT && !self.disk().files.contains_key(&ino.0) {
            return reply.error(Errno::ENOENT);
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        let disk = self.disk();
        let Some(file) = disk.files.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(file.current.len());
        let end = (start + size as usize).min(file.current.len());
        reply.data(&file.current[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        let mut disk = self.disk();
        let Some(file) = disk.files.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let change = Pending::Write {
            offset: offset as usize,
            data: data.to_vec(),
        };
        apply(&mut file.current, &change);
        file.pending.push(change);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        let mut disk = self.disk();
        let Some(file) = disk.files.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        file.durable = file.current.clone();
        file.pending.clear();
        self.syncs.fetch_add(1, Ordering::SeqCst);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if self.down() {
            return reply.error(Errno::EIO);
        }
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let mut disk = self.disk();
        if disk
            .files
            .values()
            .any(|file| OsStr::new(&file.name) == name)
        {
            return reply.error(Errno::EEXIST);
        }
        disk.next_inode = disk.next_inode.max(INodeNo::ROOT.0) + 1;
        let inode = disk.next_inode;
        disk.files.insert(
            inode,
            Node {
                name: name.to_string_lossy().into_owned(),
                ..Node::default()
            },
        );
        reply.created(
            &TTL,
            &LossyFs::attr(inode, 0),
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }
}

use punctual_testkit::model::SplitMix64 as Rng;

/// The filesystem mounted on a temporary directory; unmounted when dropped.
struct Mounted {
    fs: LossyFs,
    dir: tempfile::TempDir,
    session: Option<fuser::BackgroundSession>,
}

impl Mounted {
    fn mount() -> Result<Mounted, String> {
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let fs = LossyFs::default();
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("punctual-lossy".to_owned())];
        let session = fuser::spawn_mount(fs.clone(), dir.path(), &config)
            .map_err(|error| format!("mounting the FUSE filesystem: {error}"))?;
        Ok(Mounted {
            fs,
            dir,
            session: Some(session),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Dropping the session unmounts.
        drop(self.session.take());
    }
}

/// What one seed's run ended with.
struct Outcome {
    acknowledged_inserts: usize,
    acknowledged_completions: usize,
    /// Acknowledged writes the restarted store does not have (or `None` if it opened cleanly
    /// and had them all); a refusal to open counts as a loss.
    lost: Result<Vec<String>, String>,
}

/// One seed: work, lose power, restart, check.
async fn run_seed(seed: u64, synced: bool) -> Option<Outcome> {
    let mounted = match Mounted::mount() {
        Ok(mounted) => mounted,
        Err(why) => {
            punctual_testkit::skip_unless_ci("the power-loss test", &why);
            return None;
        }
    };
    let mut rng = Rng(seed);
    let db = mounted.path().join("punctual.db");
    let options = SqliteOptions {
        disk_reserve: 0,
        read_connections: 1,
        ..SqliteOptions::default()
    };
    let store = Arc::new(if synced {
        SqliteStore::open_with(&db, options.clone()).expect("open on the lossy filesystem")
    } else {
        SqliteStore::open_unsynced(&db, options.clone()).expect("open on the lossy filesystem")
    });
    let cut_after = 5 + rng.below(120) as usize;
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let inserted: Arc<Mutex<Vec<JobId>>> = Arc::default();
    let completed: Arc<Mutex<Vec<JobId>>> = Arc::default();

    let mut workers = Vec::new();
    for worker in 0..4u64 {
        let (store, acknowledged) = (Arc::clone(&store), Arc::clone(&acknowledged));
        let (inserted, completed) = (Arc::clone(&inserted), Arc::clone(&completed));
        let fs = mounted.fs.clone();
        let mut rng = Rng(seed ^ (worker + 1).wrapping_mul(0x5851_f42d_4c95_7f2d));
        workers.push(tokio::spawn(async move {
            for _ in 0..200 {
                if fs.down() {
                    return;
                }
                if worker % 2 == 0 || rng.below(3) == 0 {
                    let count = 1 + rng.below(5) as usize;
                    let jobs = (0..count)
                        .map(|_| new_job("k", NOW, JobOptions::default(), NOW))
                        .collect();
                    if let Ok(ids) = store.insert(jobs, NOW).await {
                        inserted.lock().unwrap().extend(ids);
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    let request = ClaimRequest {
                        holder: node(&format!("node-{worker}")),
                        queues: None,
                        kinds: None,
                        limit: 1 + rng.below(8) as usize,
                        due_by: NOW,
                        lease: Duration::from_secs(30),
                    };
                    let Ok(claimed) = store.claim(request, NOW).await else {
                        continue;
                    };
                    for job in claimed {
                        let token = job.lease.as_ref().expect("claimed").token;
                        if store.complete(job.id, token, NOW).await.is_ok() {
                            completed.lock().unwrap().push(job.id);
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }
        }));
    }
    // The power goes once enough writes were acknowledged (or the workers are done).
    while acknowledged.load(Ordering::SeqCst) < cut_after
        && !workers.iter().all(|worker| worker.is_finished())
    {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    mounted.fs.cut();
    for worker in workers {
        worker.await.expect("a worker");
    }
    // Whatever the old store still does fails: the disk is gone.
    drop(Arc::into_inner(store).expect("the workers are done"));
    // Pages the kernel still caches for the old store are written back now, into a disk that
    // is gone (each write fails), not after the restart.
    let _ = std::process::Command::new("sync")
        .arg("-f")
        .arg(mounted.path())
        .stderr(std::process::Stdio::null())
        .status();
    mounted.fs.restart(&mut rng);

    let inserted = inserted.lock().unwrap().clone();
    let completed: HashSet<JobId> = completed.lock().unwrap().iter().copied().collect();
    let lost = match SqliteStore::open_with(&db, options) {
        Err(error) => Err(format!("the restarted store does not open: {error}")),
        Ok(reopened) => {
            let mut lost = Vec::new();
            if let Err(error) = reopened.integrity_check() {
                lost.push(format!("integrity check: {error}"));
            }
            for id in &inserted {
                match reopened.get(*id).await {
                    Ok(Some(job)) => {
                        if completed.contains(id) && job.state != JobState::Succeeded {
                            lost.push(format!("{id} completed, now {:?}", job.state));
                        }
                    }
                    Ok(None) => lost.push(format!("{id} inserted, now missing")),
                    Err(error) => lost.push(format!("{id}: {error}")),
                }
            }
            Ok(lost)
        }
    };
    Some(Outcome {
        acknowledged_inserts: inserted.len(),
        acknowledged_completions: completed.len(),
        lost,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_a_power_loss() {
    let (mut completions, mut inserts) = (0, 0);
    for seed in 0..SEEDS {
        let Some(outcome) = run_seed(seed, true).await else {
            return;
        };
        match &outcome.lost {
            Ok(lost) => assert!(
                lost.is_empty(),
                "seed {seed}: {} of {} acknowledged inserts and {} completions; lost: {lost:#?}",
                lost.len(),
                outcome.acknowledged_inserts,
                outcome.acknowledged_completions
            ),
            Err(error) => panic!("seed {seed}: {error}"),
        }
        assert!(
            outcome.acknowledged_inserts > 0,
            "seed {seed} acknowledged nothing"
        );
        completions += outcome.acknowledged_completions;
        inserts += outcome.acknowledged_inserts;
    }
    assert!(completions > 0, "no seed acknowledged a completion");
    eprintln!(
        "power loss: {SEEDS} seeds, {inserts} acknowledged inserted jobs and {completions} \
         completions, none lost"
    );
}

/// The negative control: with `synchronous=OFF` nothing is fsynced, and the same test must
/// see acknowledged writes lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_synchronous_off_the_test_sees_the_loss() {
    let mut caught = 0;
    for seed in 0..SEEDS / 4 {
        let Some(outcome) = run_seed(seed, false).await else {
            return;
        };
        if !matches!(&outcome.lost, Ok(lost) if lost.is_empty()) {
            caught += 1;
        }
    }
    eprintln!(
        "power loss with synchronous=OFF: {caught} of {} seeds lost acknowledged writes",
        SEEDS / 4
    );
    assert!(
        caught >= 1,
        "with synchronous=OFF no seed lost an acknowledged write: the power-loss test cannot fail"
    );
}
