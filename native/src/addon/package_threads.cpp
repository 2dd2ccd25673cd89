#include "addon/package_threads.h"

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "cpu/thread_pool.h"

namespace moe::addon {

namespace {

// One JS thread's (main or worker) completion channel: a thread-safe function
// referenced only while work is in flight, so that it keeps the event loop
// alive exactly as long as a Promise is pending.
struct Channel {
  Napi::ThreadSafeFunction tsfn;
  std::mutex mutex;
  std::condition_variable idle;
  int inFlight = 0;        // queued or running on the package's threads; guarded by mutex
  bool tornDown = false;   // the environment is going away: skip work not yet started
  int referenced = 0;      // JS thread only: in-flight count as seen by Ref/Unref
};

struct Job {
  std::function<Status()> work;
  std::function<void(napi_env, const Status&)> done;
  Channel* channel;
  Status status;
};

class Executor {
 public:
  // NOTE: the threads outlive any one environment (a thread that has just
  // handed back a worker's last job still runs this library's code when that
  // worker's teardown ends); the addon is linked -z nodelete, so Node's
  // dlclose after the last worker that loaded it never unmaps that code.
  static Executor& instance() {
    // Never destroyed: its threads may still be parked on the queue at exit.
    static Executor* executor = new Executor(packageThreadCount());
    return *executor;
  }

  void push(Job* job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(job);
    }
    wake_.notify_one();
  }

 private:
  explicit Executor(int n) {
    for (int i = 0; i < n; ++i) {
      std::thread([this] {
        cpu::nameThisThread("moe-async");
        loop();
      }).detach();
    }
  }

  void loop() {
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [this] { return !queue_.empty(); });
        job = queue_.front();
        queue_.pop_front();
      }
      Channel* ch = job->channel;
      bool skip;
      {
        std::lock_guard<std::mutex> lock(ch->mutex);
        skip = ch->tornDown;
      }
      if (!skip) job->status = job->work();
      // Hand the job to its JS thread. Blocking never waits (the queue is
      // unbounded); it fails only once the function is closing, at teardown,
      // when the job is dropped below (its JS references die with the env).
      const napi_status sent = ch->tsfn.BlockingCall(job, [](Napi::Env env, Napi::Function, Job* j) {
        j->done(env, j->status);
        delete j;
      });
      std::lock_guard<std::mutex> lock(ch->mutex);
      if (--ch->inFlight == 0) ch->idle.notify_all();
      (void)sent;
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job*> queue_;
};

thread_local Channel* tChannel = nullptr;

// Runs before the thread-safe function's own teardown (cleanup hooks run last
// in, first out): waits until no package thread still holds a job of this
// environment, so none can reach a freed function. Jobs delivered but not
// yet run are dropped by the function's teardown (node-addon-api's CallJS
// does not call back without an env): they leak with the exiting
// environment rather than release its JS references during its teardown.
void closeChannel(void* arg) {
  auto* ch = static_cast<Channel*>(arg);
  {
    std::unique_lock<std::mutex> lock(ch->mutex);
    ch->tornDown = true;
    ch->idle.wait(lock, [ch] { return ch->inFlight == 0; });
  }
  tChannel = nullptr;
  // The function is released by node at teardown; the channel outlives no job now.
  delete ch;
}

// The JS thread's channel, made at its first Promise-form op; nullptr where
// its function cannot be made (an exiting environment).
Channel* channel(Napi::Env env) {
  if (tChannel == nullptr) {
    Napi::ThreadSafeFunction tsfn;
    if (!makeCompletionFunction(env, "moe-kernels", &tsfn)) return nullptr;
    tChannel = new Channel;
    tChannel->tsfn = tsfn;
    napi_add_env_cleanup_hook(env, closeChannel, tChannel);
  }
  return tChannel;
}

}  // namespace

bool makeCompletionFunction(Napi::Env env, const char* name, Napi::ThreadSafeFunction* out) {
  Napi::ThreadSafeFunction tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function(), name, 0, 1);
  if (static_cast<napi_threadsafe_function>(tsfn) == nullptr) return false;
  tsfn.Unref(env);
  *out = tsfn;
  return true;
}

int packageThreadCount() {
  const char* env = std::getenv("MOE_ASYNC_THREADS");
  if (env != nullptr) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 64) return static_cast<int>(n);
  }
  return 4;
}

bool runOnPackageThreads(Napi::Env env, std::function<Status()> work, std::function<void(napi_env, const Status&)> done) {
  Channel* channelOfEnv = channel(env);
  if (channelOfEnv == nullptr) return false;
  Channel& ch = *channelOfEnv;
  if (ch.referenced++ == 0) ch.tsfn.Ref(env);
  {
    std::lock_guard<std::mutex> lock(ch.mutex);
    ++ch.inFlight;
  }
  // On the JS thread, after `done`: the last completion lets the loop exit.
  auto unref = [&ch, done = std::move(done)](napi_env e, const Status& status) {
    done(e, status);
    if (e != nullptr && --ch.referenced == 0) ch.tsfn.Unref(Napi::Env(e));
  };
  Executor::instance().push(new Job{std::move(work), std::move(unref), &ch, Status::ok()});
  return true;
}

}  // namespace moe::addon
