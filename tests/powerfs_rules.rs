//! The power-loss filesystem's rules, through a real mount: each test
//! writes through ordinary system calls, cuts the power, remounts, and
//! reads back exactly what must have survived (the table in
//! `tests/powerfs/mod.rs`).

mod powerfs;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use powerfs::{Names, PowerFs};

fn mounted(names: Names) -> (tempfile::TempDir, PowerFs) {
    powerfs::require();
    let d = tempfile::tempdir().unwrap();
    let fs = PowerFs::mount(d.path(), names).unwrap();
    (d, fs)
}

fn read(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(p)?.read_to_end(&mut v)?;
    Ok(v)
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

/// A file created and named durably, holding `bytes` durably.
fn durable_file(fs: &PowerFs, name: &str, bytes: &[u8]) -> File {
    let p = fs.path().join(name);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
    sync_dir(fs.path());
    f
}

#[test]
fn writes_not_fsynced_are_lost_and_fsynced_ones_kept() {
    let (_d, mut fs) = mounted(Names::Strict);
    let p = fs.path().join("f");
    let mut f = durable_file(&fs, "f", b"durable-");
    f.write_all(b"volatile").unwrap();
    // Visible before the cut, as in a page cache.
    assert_eq!(read(&p).unwrap(), b"durable-volatile");
    // An overwrite inside the durable part is lost too.
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"D", 0).unwrap();
    drop(f); // close makes nothing durable
    fs.remount().unwrap();
    assert_eq!(read(&p).unwrap(), b"durable-");
}

#[test]
fn fdatasync_makes_data_and_size_durable() {
    let (_d, mut fs) = mounted(Names::Strict);
    let p = fs.path().join("f");
    let mut f = durable_file(&fs, "f", b"");
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    f.write_all(&big).unwrap();
    f.sync_data().unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    fs.remount().unwrap();
    assert_eq!(read(&p).unwrap(), big);
}

#[test]
fn sync_file_range_makes_nothing_durable() {
    let (_d, mut fs) = mounted(Names::Strict);
    let p = fs.path().join("db");
    let mut f = durable_file(&fs, "db", b"0123");
    f.write_all(b"4567").unwrap();
    // What sled's flush does.
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid fd.
    let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    drop(f);
    fs.remount().unwrap();
    assert_eq!(read(&p).unwrap(), b"0123");
}

#[test]
fn truncate_and_fallocate_are_lost_unless_fsynced() {
    let (_d, mut fs) = mounted(Names::Strict);
    let a = fs.path().join("a");
    let b = fs.path().join("b");
    let fa = durable_file(&fs, "a", b"abcdefgh");
    let fb = durable_file(&fs, "b", b"abcdefgh");
    fa.set_len(3).unwrap();
    // SAFETY: a valid fd; mode 0 grows the file to 8 KiB.
    assert_eq!(unsafe { libc::fallocate(fb.as_raw_fd(), 0, 0, 8192) }, 0);
    assert_eq!(std::fs::metadata(&a).unwrap().len(), 3);
    assert_eq!(std::fs::metadata(&b).unwrap().len(), 8192);
    drop((fa, fb));
    fs.remount().unwrap();
    assert_eq!(read(&a).unwrap(), b"abcdefgh");
    assert_eq!(read(&b).unwrap(), b"abcdefgh");

    // The same, fsynced.
    let fa = OpenOptions::new().write(true).open(&a).unwrap();
    let fb = OpenOptions::new().write(true).open(&b).unwrap();
    fa.set_len(3).unwrap();
    fa.sync_all().unwrap();
    // SAFETY: a valid fd.
    assert_eq!(unsafe { libc::fallocate(fb.as_raw_fd(), 0, 0, 8192) }, 0);
    fb.sync_data().unwrap();
    drop((fa, fb));
    fs.remount().unwrap();
    assert_eq!(read(&a).unwrap(), b"abc");
    let mut want = b"abcdefgh".to_vec();
    want.resize(8192, 0);
    assert_eq!(read(&b).unwrap(), want);
}

#[test]
fn a_new_name_needs_its_directory_fsynced() {
    let (_d, mut fs) = mounted(Names::Strict);
    let kept = fs.path().join("kept");
    let named = fs.path().join("named");
    std::fs::create_dir(fs.path().join("sub")).unwrap();
    // The file's data is fsynced, its name is not.
    File::create(&named).unwrap().sync_all().unwrap();
    drop(durable_file(&fs, "kept", b"k")); // fsyncs the root: names sub, lost, kept
    let sub_file = fs.path().join("sub/x");
    std::fs::write(&sub_file, b"x").unwrap();
    File::open(&sub_file).unwrap().sync_all().unwrap(); // sub itself never fsynced
    fs.remount().unwrap();
    assert_eq!(read(&kept).unwrap(), b"k");
    assert_eq!(
        read(&named).unwrap(),
        b"",
        "named by the root's fsync, data fsynced empty"
    );
    assert!(fs.path().join("sub").is_dir());
    assert_eq!(
        read(&sub_file).unwrap_err().kind(),
        std::io::ErrorKind::NotFound,
        "sub was never fsynced, so x was never named"
    );

    // A name created after the directory's last fsync is lost.
    std::fs::write(fs.path().join("late"), b"l").unwrap();
    File::open(fs.path().join("late"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs.remount().unwrap();
    assert!(!fs.path().join("late").exists());
}

#[test]
fn rename_and_unlink_need_the_directory_fsynced() {
    let (_d, mut fs) = mounted(Names::Strict);
    drop(durable_file(&fs, "old", b"old"));
    drop(durable_file(&fs, "gone", b"gone"));
    std::fs::rename(fs.path().join("old"), fs.path().join("new")).unwrap();
    std::fs::remove_file(fs.path().join("gone")).unwrap();
    fs.remount().unwrap();
    assert_eq!(read(&fs.path().join("old")).unwrap(), b"old");
    assert!(!fs.path().join("new").exists());
    assert_eq!(read(&fs.path().join("gone")).unwrap(), b"gone");

    std::fs::rename(fs.path().join("old"), fs.path().join("new")).unwrap();
    std::fs::remove_file(fs.path().join("gone")).unwrap();
    sync_dir(fs.path());
    fs.remount().unwrap();
    assert!(!fs.path().join("old").exists());
    assert_eq!(read(&fs.path().join("new")).unwrap(), b"old");
    assert!(!fs.path().join("gone").exists());
}

/// outbox's witness: write a temporary file, fsync, rename over the old
/// one, fsync the directory. A cut at any point leaves one whole version.
#[test]
fn replace_by_rename_keeps_one_whole_version() {
    let (_d, mut fs) = mounted(Names::Strict);
    let w = fs.path().join("w");
    let tmp = fs.path().join("w.tmp");
    drop(durable_file(&fs, "w", b"version 1"));
    let dir = fs.path().to_path_buf();
    let replace = |last_step: usize| {
        let mut f = File::create(&tmp).unwrap();
        f.write_all(b"version 2").unwrap();
        if last_step >= 1 {
            f.sync_all().unwrap();
        }
        if last_step >= 2 {
            std::fs::rename(&tmp, &w).unwrap();
        }
        if last_step >= 3 {
            sync_dir(&dir);
        }
    };
    for (step, want) in [(0, "version 1"), (1, "version 1"), (2, "version 1")] {
        replace(step);
        fs.remount().unwrap();
        assert_eq!(read(&w).unwrap(), want.as_bytes(), "cut after step {step}");
    }
    replace(3);
    fs.remount().unwrap();
    assert_eq!(read(&w).unwrap(), b"version 2");
}

#[test]
fn names_are_durable_at_once_under_lazyfs_rules() {
    let (_d, mut fs) = mounted(Names::Immediate);
    std::fs::write(fs.path().join("a"), b"data").unwrap();
    std::fs::create_dir(fs.path().join("d")).unwrap();
    std::fs::write(fs.path().join("d/b"), b"data").unwrap();
    std::fs::rename(fs.path().join("d/b"), fs.path().join("c")).unwrap();
    fs.remount().unwrap();
    // The names survive, the unsynced data does not.
    assert_eq!(read(&fs.path().join("a")).unwrap(), b"");
    assert_eq!(read(&fs.path().join("c")).unwrap(), b"");
    assert!(fs.path().join("d").is_dir());
    assert!(!fs.path().join("d/b").exists());
}

#[test]
fn a_trigger_cuts_before_the_nth_sync_takes_effect() {
    let (_d, mut fs) = mounted(Names::Strict);
    let p = fs.path().join("log");
    let mut f = durable_file(&fs, "log", b"");
    fs.arm("log", 3);
    for (i, chunk) in [b"one ", b"two ", b"thr "].iter().enumerate() {
        f.write_all(*chunk).unwrap();
        let r = f.sync_data();
        if i < 2 {
            r.unwrap();
            assert!(!fs.is_cut());
        } else {
            assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EIO));
        }
    }
    assert!(fs.wait_fired(std::time::Duration::from_secs(1)));
    // Everything after the cut fails: the frozen process learns nothing.
    assert_eq!(
        std::fs::metadata(&p).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    drop(f);
    fs.remount().unwrap();
    assert_eq!(read(&p).unwrap(), b"one two ");
    // Other files do not count towards a trigger.
    fs.arm("log", 1);
    let g = durable_file(&fs, "other", b"x");
    drop(g);
    assert!(!fs.is_cut());
    assert!(fs.disarm());
}

/// A trigger freezes the victim with SIGSTOP at the moment of the cut.
#[test]
fn a_trigger_freezes_the_victim() {
    let (_d, mut fs) = mounted(Names::Strict);
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    fs.set_victim(Some(child.id()));
    fs.arm("f", 1);
    let f = durable_file_unsynced(&fs, "f");
    assert!(f.sync_all().is_err());
    let state = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
    // The third field of /proc/PID/stat is the state; T is stopped.
    let stopped = (0..100).any(|_| {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        if s.rsplit(')').next().unwrap().trim_start().starts_with('T') {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        false
    });
    assert!(stopped, "not stopped: {state}");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(f);
    fs.remount().unwrap();
}

fn durable_file_unsynced(fs: &PowerFs, name: &str) -> File {
    File::create(fs.path().join(name)).unwrap()
}

/// Many files, large writes, overwrites at random offsets: after a cut
/// each file holds exactly its content at its last fsync.
#[test]
fn random_writes_keep_exactly_the_last_fsynced_content() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (_d, mut fs) = mounted(Names::Strict);
    let mut files = Vec::new();
    let mut model: Vec<(Vec<u8>, Vec<u8>)> = Vec::new(); // (live, at last fsync)
    for i in 0..4 {
        files.push(durable_file(&fs, &format!("f{i}"), b""));
        model.push((Vec::new(), Vec::new()));
    }
    use std::os::unix::fs::FileExt;
    for _ in 0..400 {
        let i = rng.random_range(0..files.len());
        match rng.random_range(0..10) {
            0 => {
                files[i].sync_all().unwrap();
                model[i].1 = model[i].0.clone();
            }
            1 => {
                let len = rng.random_range(0..70_000);
                files[i].set_len(len as u64).unwrap();
                model[i].0.resize(len, 0);
            }
            _ => {
                let off = rng.random_range(0..60_000usize);
                let n = rng.random_range(1..20_000usize);
                let data: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                files[i].write_all_at(&data, off as u64).unwrap();
                let live = &mut model[i].0;
                if live.len() < off + n {
                    live.resize(off + n, 0);
                }
                live[off..off + n].copy_from_slice(&data);
            }
        }
    }
    for (i, (live, _)) in model.iter().enumerate() {
        assert_eq!(&read(&fs.path().join(format!("f{i}"))).unwrap(), live);
    }
    drop(files);
    fs.remount().unwrap();
    for (i, (_, synced)) in model.iter().enumerate() {
        assert_eq!(
            &read(&fs.path().join(format!("f{i}"))).unwrap(),
            synced,
            "file f{i}"
        );
    }
}
