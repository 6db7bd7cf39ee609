//! A function that lives outside the main executable (a shared library, a plugin) cannot
//! be found by a child: it is refused with a clear error before any child starts.

use multiproc::{Error, Pool, Process};

/// `abs` of the C library (a shared object), typed as the `fn(A) -> R` the API takes.
/// It is never called: the point is that the crate refuses it first.
fn foreign() -> fn(i32) -> i32 {
    let c: unsafe extern "C" fn(libc::c_int) -> libc::c_int = libc::abs;
    // SAFETY: only the address is used; the crate refuses it before any call (if it did
    // not, the test would fail anyway).
    unsafe {
        std::mem::transmute::<unsafe extern "C" fn(libc::c_int) -> libc::c_int, fn(i32) -> i32>(c)
    }
}

/// A function of a plugin loaded with `dlopen`, built from C source with the system's C
/// compiler (`None` where there is none).
fn plugin_fn() -> Option<fn(i32) -> i32> {
    let dir = std::env::temp_dir().join(format!("multiproc-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("plug.c");
    let lib = dir.join("libplug.so");
    std::fs::write(&src, "int triple(int x) { return 3 * x; }\n").ok()?;
    let ok = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    let path = std::ffi::CString::new(lib.to_str()?).ok()?;
    // SAFETY: a library we just built, with one plain C function and no constructors.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    let _ = std::fs::remove_dir_all(&dir);
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is a live library handle; the name is a C string.
    let sym = unsafe { libc::dlsym(handle, c"triple".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: only the address is used (see `foreign`).
    Some(unsafe { std::mem::transmute::<*mut libc::c_void, fn(i32) -> i32>(sym) })
}

fn refused<T: std::fmt::Debug>(r: multiproc::Result<T>) {
    match r {
        Err(Error::InvalidOperation(msg)) => {
            assert!(msg.contains("dynamic library"), "unclear message: {msg}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn double(x: i32) -> i32 {
    2 * x
}

#[test]
fn functions_outside_the_executable_are_refused_before_any_child_starts() {
    multiproc::init();
    let mut fs = vec![foreign()];
    fs.extend(plugin_fn());
    let have_cc = std::process::Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert_eq!(
        fs.len(),
        if have_cc { 2 } else { 1 },
        "the plugin was built and loaded"
    );
    for f in fs {
        // A `Process` target (and an initializer) returns a `Termination` type; the address
        // is what matters.
        // SAFETY: only the address is used (see `foreign`).
        let target = unsafe { std::mem::transmute::<fn(i32) -> i32, fn(i32)>(f) };
        let mut p = Process::new(target, 5);
        refused(p.start());
        assert!(p.pid().is_none(), "no child was started");
        refused(multiproc::spawn(f, 5).map(|_| ()));
        assert!(multiproc::active_children().is_empty());

        let pool = Pool::new(1).unwrap();
        refused(pool.apply(f, 5));
        refused(pool.map(f, vec![1, 2, 3]));
        refused(pool.apply_async(f, 5).get());
        // The pool is unharmed.
        assert_eq!(pool.map(double, vec![1, 2, 3]).unwrap(), vec![2, 4, 6]);
        drop(pool);

        refused(Pool::builder().processes(1).initializer(target, 1).build());
        refused(
            multiproc::Manager::builder()
                .initializer(target, 1)
                .start()
                .map(|_| ()),
        );
    }
    // A barrier's action runs in whichever process arrives last: one outside the
    // executable is refused when the barrier is made.
    let action: fn() = {
        let c: unsafe extern "C" fn() = libc::sync;
        // SAFETY: only the address is used; the crate refuses it before any call.
        unsafe { std::mem::transmute::<unsafe extern "C" fn(), fn()>(c) }
    };
    refused(
        multiproc::Barrier::builder(2)
            .action(action)
            .build()
            .map(|_| ()),
    );
}
